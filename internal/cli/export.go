package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"tandem/internal/backend"
	"tandem/internal/backend/kubernetes"
	"tandem/internal/manifest"
	"tandem/internal/runtime/onnx"
)

func init() { Register(exportCmd) }

func exportCmd() *cobra.Command {
	var file, namespace string
	var asKubernetes, hostNetwork bool
	cmd := &cobra.Command{
		Use:   "export --kubernetes -f MANIFEST",
		Short: "Print the Kubernetes objects tandem would apply for a manifest",
		Long: `Print the Kubernetes objects tandem's kubernetes backend would apply for a
manifest (a Deployment, a Service, and a ConfigMap carrying a runtime.onnx
model), as YAML,
for teams that keep their cluster in Git. The objects come from the same code
the backend applies; nothing is sent to a cluster. The Deployment has no
spec.replicas: tandem sets the count through the scale subresource, and
kubectl apply then leaves it alone.`,
		Example: `  tandem export --kubernetes -f model.yaml
  tandem export --kubernetes -f model.yaml -n models | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !asKubernetes {
				return usageErrorf("give the target format: --kubernetes")
			}
			m, err := manifest.Load(file)
			if err != nil {
				return err
			}
			spec := backend.Spec{Deployment: m.Name, Revision: m.Hash(), Manifest: m}
			// What the controller gives the backend: runtime.onnx becomes
			// the tandem-onnx image with the model mounted.
			if m.Runtime.ONNX != "" {
				if err := (onnx.Runtime{}).Prepare(manifest.BackendKubernetes, &spec); err != nil {
					return err
				}
			}
			cfg := kubernetes.Config{Namespace: namespace, HostNetwork: hostNetwork}
			if err := kubernetes.Export(cmd.OutOrStdout(), spec, cfg); err != nil {
				return fmt.Errorf("export %s: %w", file, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest file (YAML)")
	cmd.MarkFlagFilename("file", "yaml", "yml")
	cmd.Flags().BoolVar(&asKubernetes, "kubernetes", false, "print Kubernetes YAML")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", kubernetes.DefaultNamespace, "namespace of the objects")
	cmd.Flags().BoolVar(&hostNetwork, "host-network", false, "run pods in the node's network (single-node test clusters)")
	cmd.MarkFlagRequired("file")
	return cmd
}
