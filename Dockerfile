# The hookgate image: one static binary (operator, ingest, crds, ...) on distroless, non-root.
#   docker build -t ghcr.io/hookgate/hookgate:0.1.0 .
# The chart's default image (charts/hookgate: image.repository / appVersion) is this one.
#
# Not built or run here: the development machines and CI have no container engine. What is
# checked is what the image runs: the same binary the tests build, under the chart's
# restricted pod security (user 65532, read-only root filesystem) — which this image fits:
# the binary writes no files and needs no shell.

# Builder: a static musl binary. ring (rustls' crypto) compiles C, hence musl-tools.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --locked --release --target x86_64-unknown-linux-musl --bin hookgate \
 && cp target/x86_64-unknown-linux-musl/release/hookgate /hookgate

# Runtime: no shell, no package manager; CA certificates for HTTPS sinks and the API server.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /hookgate /usr/local/bin/hookgate
# distroless' nonroot user; the chart's securityContext runs as the same id.
USER 65532:65532
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/hookgate"]
