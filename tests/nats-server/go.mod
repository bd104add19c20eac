// Wrapper module: builds nats-server from the Go module proxy where Debian's package is not
// installable (scripts/install-nats-server).
module hookgate.dev/tests/nats-server

go 1.26.0

tool github.com/nats-io/nats-server/v2

require github.com/nats-io/nats-server/v2 v2.15.2
