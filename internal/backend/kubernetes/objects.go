package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Names and values tandem puts on the objects it builds.
const (
	// ContainerName is the model's container in every pod.
	ContainerName = "model"
	// PortName names the container port the model serves HTTP on.
	PortName = "http"
	// DefaultPort is $PORT inside a pod when the manifest sets no runtime.port.
	DefaultPort = 8080
	// ResourceGPU is the extended resource resources.gpus asks for.
	ResourceGPU corev1.ResourceName = "nvidia.com/gpu"
	// AnnotationSpecHash holds a hash of the pod template tandem built, so
	// that Apply leaves an unchanged Deployment alone.
	AnnotationSpecHash = "tandem.spec-hash"
	// AnnotationFilesHash on the pod template changes when a mounted
	// file does, so that pods roll to the new content.
	AnnotationFilesHash = "tandem.files-hash"
	// maxConfigMapFiles is how much mounted file content may travel in a
	// ConfigMap (the API server refuses objects over 1 MiB).
	maxConfigMapFiles = 1000 * 1000
	// hostPortBase and hostPortSpan bound the ports chosen for host-network
	// pods whose manifest sets no runtime.port.
	hostPortBase = 20000
	hostPortSpan = 10000
)

// ErrFilesTooLarge is returned when the files of spec.Mounts (a
// runtime.onnx model) are too large to ship in a ConfigMap; bake them into
// runtime.image instead.
var ErrFilesTooLarge = errors.New("mounted files too large for a ConfigMap")

// Objects are the Kubernetes objects tandem keeps for one deployment.
type Objects struct {
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	// ConfigMap carries the files of spec.Mounts (a runtime.onnx model);
	// nil when there are none.
	ConfigMap *corev1.ConfigMap
}

// Build returns the objects Apply creates for spec. The Deployment starts
// with 0 replicas. Files in spec.Mounts travel in a ConfigMap and are
// mounted at their targets, so that they reach pods on any node; folders
// become hostPath volumes (single-node clusters only). Build reads those
// files; it calls no API server.
func Build(spec backend.Spec, cfg Config) (Objects, error) {
	cfg = cfg.withDefaults()
	m := spec.Manifest
	if m == nil {
		return Objects{}, errors.New("spec has no manifest")
	}
	name := spec.Deployment
	if name == "" {
		name = m.Name
	}
	rev := spec.Revision
	if rev == "" {
		rev = m.Hash()
	}
	port := containerPort(m, name, cfg)
	labels := map[string]string{
		backend.LabelManaged:    "true",
		backend.LabelDeployment: name,
		backend.LabelRevision:   rev,
	}
	selector := map[string]string{backend.LabelManaged: "true", backend.LabelDeployment: name}
	meta := metav1.ObjectMeta{Name: name, Namespace: cfg.Namespace, Labels: labels}

	ctr := corev1.Container{
		Name:            ContainerName,
		Image:           m.Runtime.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         slices.Clone(m.Runtime.Command),
		Args:            slices.Clone(m.Runtime.Args),
		Env:             env(m, spec.Env, port),
		Ports:           []corev1.ContainerPort{{Name: PortName, ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
		ReadinessProbe:  readiness(m, cfg),
		Resources:       resources(m.Resources),
		// A second before SIGTERM lets every tandem see the pod terminating
		// and stop sending it new requests; the program then drains what
		// is in flight.
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}},
	}
	var objs Objects
	var volumes []corev1.Volume
	var templateAnn map[string]string
	if len(spec.Mounts) > 0 {
		files, err := mounts(spec.Mounts, meta, &ctr, &volumes)
		if err != nil {
			return Objects{}, err
		}
		if files != nil {
			objs.ConfigMap = files
			templateAnn = map[string]string{AnnotationFilesHash: specHash(files.BinaryData)}
		}
	}
	if ctr.Image == "" {
		return Objects{}, errors.New("runtime.image is required with the kubernetes backend")
	}

	pod := corev1.PodSpec{
		Containers:                    []corev1.Container{ctr},
		Volumes:                       volumes,
		TerminationGracePeriodSeconds: ptr(graceSeconds(m.Timeouts.Grace.D().Seconds()) + 1),
		AutomountServiceAccountToken:  ptr(false),
		EnableServiceLinks:            ptr(false),
	}
	strategy := appsv1.DeploymentStrategy{
		Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{
			MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(0)),
		},
	}
	if cfg.HostNetwork {
		pod.HostNetwork = true
		pod.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		// Two pods of one deployment cannot share the node's port: replace
		// instead of surging.
		strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{
			MaxSurge: ptr(intstr.FromInt32(0)), MaxUnavailable: ptr(intstr.FromInt32(1)),
		}
	}
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: templateAnn}, Spec: pod}

	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: *meta.DeepCopy(),
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr(int32(0)),
			Selector:             &metav1.LabelSelector{MatchLabels: selector},
			Template:             template,
			Strategy:             strategy,
			RevisionHistoryLimit: ptr(int32(2)),
		},
	}
	dep.Annotations = map[string]string{AnnotationSpecHash: specHash(dep.Spec.Template, dep.Spec.Strategy, objs.ConfigMap)}
	for k, v := range spec.Annotations {
		dep.Annotations[k] = v
	}
	svcMeta := *meta.DeepCopy()
	svcMeta.Name = serviceName(name)
	objs.Deployment = dep
	objs.Service = &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: svcMeta,
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name: PortName, Port: 80, TargetPort: intstr.FromString(PortName), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	return objs, nil
}

// containerPort is the port the program serves on: runtime.port, else
// DefaultPort in the pod's own network, else (sharing the node's network)
// a port derived from the deployment's name so that deployments differ.
func containerPort(m *manifest.Manifest, name string, cfg Config) int {
	if m.Runtime.Port > 0 {
		return m.Runtime.Port
	}
	if !cfg.HostNetwork {
		return DefaultPort
	}
	h := fnv.New32a()
	h.Write([]byte(cfg.Namespace + "/" + name))
	return hostPortBase + int(h.Sum32()%hostPortSpan)
}

func env(m *manifest.Manifest, extra map[string]string, port int) []corev1.EnvVar {
	out := []corev1.EnvVar{{Name: "PORT", Value: strconv.Itoa(port)}}
	for _, src := range []map[string]string{m.Runtime.Env, extra} {
		keys := make([]string, 0, len(src))
		for k := range src {
			if k != "PORT" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = slices.DeleteFunc(out, func(e corev1.EnvVar) bool { return e.Name == k })
			out = append(out, corev1.EnvVar{Name: k, Value: src[k]})
		}
	}
	return out
}

// readiness turns runtime.health into a readiness probe, checked every
// second so that a replica joins the routing table soon after it is ready.
func readiness(m *manifest.Manifest, cfg Config) *corev1.Probe {
	p := &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	// A host-network pod may listen on 127.0.0.1 only; the kubelet shares
	// the node's network, so it reaches the pod there.
	host := ""
	if cfg.HostNetwork {
		host = "127.0.0.1"
	}
	if m.Runtime.Health != "" {
		p.HTTPGet = &corev1.HTTPGetAction{Path: m.Runtime.Health, Port: intstr.FromString(PortName), Host: host}
	} else {
		p.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromString(PortName), Host: host}
	}
	return p
}

func resources(r manifest.Resources) corev1.ResourceRequirements {
	var req corev1.ResourceRequirements
	set := func(name corev1.ResourceName, q resource.Quantity, request bool) {
		if req.Limits == nil {
			req.Limits = corev1.ResourceList{}
		}
		req.Limits[name] = q
		if request {
			if req.Requests == nil {
				req.Requests = corev1.ResourceList{}
			}
			req.Requests[name] = q
		}
	}
	if r.CPU > 0 {
		set(corev1.ResourceCPU, *resource.NewMilliQuantity(int64(math.Ceil(r.CPU*1000)), resource.DecimalSI), true)
	}
	if r.Memory > 0 {
		set(corev1.ResourceMemory, *resource.NewQuantity(int64(r.Memory), resource.BinarySI), true)
	}
	if r.GPUs > 0 {
		// Extended resources take their request from the limit.
		set(ResourceGPU, *resource.NewQuantity(int64(r.GPUs), resource.DecimalSI), false)
	}
	return req
}

// mounts adds spec.Mounts to the pod: files through one ConfigMap (nil
// when there are none), folders as hostPath volumes.
func mounts(ms []backend.Mount, meta metav1.ObjectMeta, ctr *corev1.Container, volumes *[]corev1.Volume) (*corev1.ConfigMap, error) {
	data := map[string][]byte{}
	var items []corev1.KeyToPath
	total := 0
	for i, mt := range ms {
		if mt.Source == "" || !strings.HasPrefix(mt.Target, "/") {
			return nil, fmt.Errorf("mount %q -> %q: need a host path and an absolute target", mt.Source, mt.Target)
		}
		st, err := os.Stat(mt.Source)
		if err != nil {
			return nil, fmt.Errorf("mount: %w", err)
		}
		if st.IsDir() {
			vol := fmt.Sprintf("host-%d", i)
			*volumes = append(*volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: mt.Source, Type: ptr(corev1.HostPathDirectory)},
			}})
			ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: vol, MountPath: mt.Target, ReadOnly: mt.ReadOnly})
			continue
		}
		b, err := os.ReadFile(mt.Source)
		if err != nil {
			return nil, fmt.Errorf("mount: %w", err)
		}
		total += len(b)
		if total > maxConfigMapFiles {
			return nil, fmt.Errorf("mount %s: %d bytes of files, over %d: %w (build an image with them and set runtime.image)",
				filepath.Base(mt.Source), total, maxConfigMapFiles, ErrFilesTooLarge)
		}
		key := fmt.Sprintf("%d-%s", i, keyName(filepath.Base(mt.Source)))
		data[key] = b
		items = append(items, corev1.KeyToPath{Key: key, Path: key})
		// A ConfigMap is mounted read-only whatever the mount asks.
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: "files", MountPath: mt.Target, SubPath: key, ReadOnly: true})
	}
	if len(data) == 0 {
		return nil, nil
	}
	*volumes = append(*volumes, corev1.Volume{Name: "files", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: filesName(meta.Name)}, Items: items},
	}})
	cmMeta := *meta.DeepCopy()
	cmMeta.Name = filesName(meta.Name)
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: cmMeta,
		BinaryData: data,
	}, nil
}

// filesName names the ConfigMap holding a deployment's mounted files.
func filesName(deployment string) string { return truncateName(deployment + "-files") }

// keyName makes a file name a valid ConfigMap key ([-._a-zA-Z0-9]+).
func keyName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '-' || c == '.' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// specHash identifies what Apply would write, so that applying the same
// thing twice (a restart adopting its deployments) changes nothing.
func specHash(parts ...any) string {
	b, _ := json.Marshal(parts)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

// serviceName is the deployment's name when it is a valid Service name
// (which must start with a letter), else the name with a prefix.
func serviceName(name string) string {
	if name != "" && name[0] >= 'a' && name[0] <= 'z' {
		return name
	}
	return truncateName("m-" + name)
}

func truncateName(s string) string {
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimRight(s, "-")
}

func graceSeconds(s float64) int64 { return max(int64(math.Ceil(s)), 1) }

func ptr[T any](v T) *T { return &v }
