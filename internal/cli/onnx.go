package cli

import (
	"github.com/spf13/cobra"

	"tandem/internal/runtime/onnx"
)

func runtimeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "runtime",
		Short: "Built-in model servers that backends start as instances",
	}
	c.AddCommand(onnx.Command())
	return c
}
