package cli

import (
	"net/http"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tandem/internal/api"
)

// addClientFlags adds the flags that say how to reach the control API.
// The token's default is read when used, not shown in --help.
func addClientFlags(fs *pflag.FlagSet) {
	fs.String("token", "", "control API bearer token (default $TANDEM_TOKEN, which keeps it out of the process list)")
	fs.String("ca-cert", "", "PEM file of CAs to trust for a TLS control API and gateway (default $TANDEM_CA_CERT); implies https")
}

func clientOptions(cmd *cobra.Command) api.ClientOptions {
	tok, _ := cmd.Flags().GetString("token")
	if tok == "" {
		tok = os.Getenv("TANDEM_TOKEN")
	}
	ca, _ := cmd.Flags().GetString("ca-cert")
	if ca == "" {
		ca = os.Getenv("TANDEM_CA_CERT")
	}
	return api.ClientOptions{Token: tok, CACert: ca}
}

// adminClient is the control API's client. A bad --ca-cert fails its
// first request, with the reason.
func adminClient(cmd *cobra.Command) *api.Client {
	addr, _ := cmd.Flags().GetString("admin")
	c, err := api.NewClientWith(addr, clientOptions(cmd))
	if err != nil {
		c = api.NewClient(addr)
		c.HTTP = &http.Client{Transport: failing{err}}
	}
	return c
}

// gatewayClient is an HTTP client for the gateway: the same trust as the
// control API's client, never its token.
func gatewayClient(cmd *cobra.Command) *http.Client {
	tr, err := api.Transport(clientOptions(cmd).CACert)
	if err != nil {
		return &http.Client{Transport: failing{err}}
	}
	return &http.Client{Transport: tr}
}

type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }
