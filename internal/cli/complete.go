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

// onlyFirst completes a command's first argument with f, and no other.
func onlyFirst(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// completeNames returns a completion function (for an argument or a flag)
// from names the control API lists (tenants, key ids).
func completeNames(list func(ctx context.Context, cmd *cobra.Command) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
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

// completeTenants completes a tenant's name.
var completeTenants = completeNames(func(ctx context.Context, cmd *cobra.Command) ([]string, error) {
	list, err := client(cmd).Tenants(ctx)
	names := make([]string, 0, len(list))
	for _, ti := range list {
		names = append(names, ti.Name)
	}
	return names, err
})

// completeKeyIDs completes an API key's id (never a key: the API has none).
var completeKeyIDs = completeNames(func(ctx context.Context, cmd *cobra.Command) ([]string, error) {
	keys, err := client(cmd).Keys(ctx, "")
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return ids, err
})
