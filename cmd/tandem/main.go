// Command tandem deploys models serverless, dedicated or both.
package main

import (
	"os"

	"tandem/internal/cli"
)

func main() { os.Exit(cli.Execute()) }
