// Package kubernetes runs tandem's deployments on a Kubernetes cluster
// through client-go. It implements backend.ReplicaBackend: tandem decides
// how many replicas a deployment has; Kubernetes starts, restarts and
// stops them.
//
// For each deployment Apply keeps a Deployment (the pod template comes from
// the manifest: image, command, args, env with $PORT, runtime.health as a
// readiness probe, resources with resources.gpus as nvidia.com/gpu), a
// ClusterIP Service for in-cluster callers and, for the files of
// spec.Mounts (a runtime.onnx model), a ConfigMap that carries them. Every
// object has the labels backend.LabelManaged, LabelDeployment and
// LabelRevision; tandem never touches objects without them. Replica counts
// go through the scale subresource, one request each.
//
// Who owns what:
//   - One pod informer per Backend (label tandem.managed=true, one
//     namespace) owns the pod cache, indexed by deployment. Its event
//     handler only nudges the Watch goroutines of the pod's deployment
//     (a channel of one, so bursts coalesce); each Watch goroutine reads
//     the cache and sends the ready set when it changed. Nothing on the
//     request path calls the API server.
//   - A pod whose address is known but that the kubelet has not called
//     Ready yet is probed by tandem itself, by one goroutine per pod
//     (probe.go); it counts as ready while it answers, until the kubelet
//     judges it. probing, probed and wasReady (guarded by the same mutex)
//     say which pods have such a goroutine, which answered it and which
//     the kubelet has called Ready.
//   - One goroutine contends for a coordination.k8s.io Lease (client-go
//     leaderelection) from New to Close and keeps an atomic flag that
//     IsLeader reads. Close releases the lease, so another tandem takes
//     over at once; a tandem that dies is replaced after LeaseDuration.
//
// Pods normally use the cluster's pod network and are reached at pod
// IP:port. Config.HostNetwork is for single-node test clusters without a
// pod network (see hack/local-cluster.sh).
package kubernetes
