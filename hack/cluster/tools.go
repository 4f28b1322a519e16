//go:build tools

// Package cluster pins the Kubernetes commands hack/local-cluster.sh builds
// with `go build k8s.io/kubernetes/cmd/NAME`.
package cluster

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
