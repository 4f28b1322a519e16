package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completeTimeout bounds what a completion asks of the control API: a
// shell waiting on Tab must not hang on a server that is away.
const completeTimeout = 2 * time.Second

// completeDeployments completes a command's first argument with the
// deployed names (and their mode as the description, for zsh and fish).
// An unreachable server completes nothing and no file names.
func completeDeployments(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
	defer cancel()
	list, err := client(cmd).List(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s.Name, toComplete) {
			out = append(out, fmt.Sprintf("%s\t%s, %d ready", s.Name, s.Mode, s.Ready))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNames returns a completion function for a command's first
// argument from names (the tenants, key ids) the control API lists.
func completeNames(list func(ctx context.Context, cmd *cobra.Command) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
		defer cancel()
		names, err := list(ctx, cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
