# The hookgate image: one static binary (operator, ingest, crds, ...) FROM scratch, non-root.
#
# What is built and tested is `scripts/build-image` (no container engine needed: cargo for the
# static musl binary, crane to assemble and push; tests/image.rs runs the result). This file
# describes the same image for those who build with Docker or BuildKit:
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t REGISTRY/hookgate:0.1.0 .
# Both lay out the filesystem with scripts/image-rootfs, so they hold the same files; the
# config below (user, entrypoint, workdir, env, ports, labels) is the one build-image sets.
# This Dockerfile itself has not been built here: the development machines and CI have no
# container engine.

# Builder: a static musl binary. ring (rustls' crypto) and mimalloc compile C, hence musl-gcc.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY scripts/image-rootfs ./scripts/image-rootfs
RUN CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --locked --release --target x86_64-unknown-linux-musl --bin hookgate \
 && scripts/image-rootfs /rootfs target/x86_64-unknown-linux-musl/release/hookgate

# Runtime: no shell, no package manager, no libc; the nonroot user 65532 (the chart's
# securityContext runs as the same id), CA certificates for HTTPS sinks.
FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
WORKDIR /home/nonroot
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080/tcp 8081/tcp 9090/tcp
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hookgate" \
      org.opencontainers.image.description="Kubernetes operator that turns inbound webhooks into clean, identity-bearing events" \
      org.opencontainers.image.source="https://github.com/hookgate/hookgate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}"
ENTRYPOINT ["/usr/local/bin/hookgate"]
