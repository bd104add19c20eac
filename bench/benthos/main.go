// The peer of the load benchmark (scripts/load-peer): Benthos core with only the components
// the benchmark config uses (http_server input, bloblang mapping, file output).
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
