package jetstream_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"tandem/internal/cli"
	"tandem/internal/testbin"
)

// TestDeployManifest: deploy/kubernetes/jetstream.yaml decodes strictly
// into a StatefulSet and a Service, runs `tandem jetstream` with flags the
// command knows, and mounts the token file it names from the Secret.
func TestDeployManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testbin.RepoRoot(t), "deploy", "kubernetes", "jetstream.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(raw, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%d documents, want a StatefulSet and a Service", len(docs))
	}
	var ss appsv1.StatefulSet
	if err := sigsyaml.UnmarshalStrict(docs[0], &ss); err != nil || ss.Kind != "StatefulSet" {
		t.Fatalf("first document: %v (kind %q)", err, ss.Kind)
	}
	var svc corev1.Service
	if err := sigsyaml.UnmarshalStrict(docs[1], &svc); err != nil || svc.Kind != "Service" {
		t.Fatalf("second document: %v (kind %q)", err, svc.Kind)
	}
	c := ss.Spec.Template.Spec.Containers[0]
	cmd, rest, err := cli.NewRoot().Find(c.Args)
	if err != nil || cmd.Name() != "jetstream" {
		t.Fatalf("args %q are not tandem jetstream: %v", c.Args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}
	token, _ := cmd.Flags().GetString("token-file")
	mounted := false
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(token, m.MountPath+"/") {
			for _, v := range ss.Spec.Template.Spec.Volumes {
				mounted = mounted || (v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "tandem-jetstream")
			}
		}
	}
	if !mounted {
		t.Errorf("--token-file %s is not mounted from the Secret tandem-jetstream", token)
	}
	if listen, _ := cmd.Flags().GetString("listen"); !strings.HasSuffix(listen, ":4222") || svc.Spec.Ports[0].TargetPort.String() != "nats" {
		t.Errorf("listen %s, service target port %s", listen, svc.Spec.Ports[0].TargetPort.String())
	}
}
