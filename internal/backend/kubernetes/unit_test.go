package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

func parse(t *testing.T, y string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse([]byte(y), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func specOf(m *manifest.Manifest) backend.Spec {
	return backend.Spec{Deployment: m.Name, Revision: m.Hash(), Manifest: m}
}

func envMap(env []corev1.EnvVar) map[string]string {
	out := map[string]string{}
	for _, e := range env {
		out[e.Name] = e.Value
	}
	return out
}

func TestBuild(t *testing.T) {
	const image = "name: web\nbackend: kubernetes\nruntime: {image: 'reg/web:1', health: /healthz, env: {A: a, PORT: '1'}, args: [--x]}\n"
	tests := []struct {
		name  string
		yaml  string
		cfg   Config
		extra map[string]string
		check func(t *testing.T, o Objects)
	}{
		{
			name: "image with health, env and resources", yaml: image + "resources: {cpu: 0.25, memory: 256Mi, gpus: 2}\n",
			extra: map[string]string{"TANDEM_ID": "x", "A": "overridden"},
			check: func(t *testing.T, o Objects) {
				d := o.Deployment
				if *d.Spec.Replicas != 0 {
					t.Errorf("replicas %d, want 0", *d.Spec.Replicas)
				}
				if d.Namespace != DefaultNamespace || d.Labels[backend.LabelManaged] != "true" || d.Labels[backend.LabelDeployment] != "web" {
					t.Errorf("metadata %+v", d.ObjectMeta)
				}
				if !equality.Semantic.DeepEqual(d.Spec.Selector.MatchLabels, map[string]string{backend.LabelManaged: "true", backend.LabelDeployment: "web"}) {
					t.Errorf("selector %v must not hold the revision (it is immutable)", d.Spec.Selector.MatchLabels)
				}
				if d.Spec.Template.Labels[backend.LabelRevision] == "" {
					t.Error("pod template has no revision label")
				}
				c := d.Spec.Template.Spec.Containers[0]
				if c.Image != "reg/web:1" || c.ImagePullPolicy != corev1.PullIfNotPresent || !slices.Equal(c.Args, []string{"--x"}) || c.Command != nil {
					t.Errorf("container %+v", c)
				}
				want := map[string]string{"PORT": "8080", "A": "overridden", "TANDEM_ID": "x"}
				if got := envMap(c.Env); !equality.Semantic.DeepEqual(got, want) || c.Env[0].Name != "PORT" {
					t.Errorf("env %v, want %v with PORT first", c.Env, want)
				}
				if c.Ports[0].ContainerPort != DefaultPort || c.Ports[0].Name != PortName {
					t.Errorf("ports %v", c.Ports)
				}
				rp := c.ReadinessProbe
				if rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz" || rp.HTTPGet.Port != intstr.FromString(PortName) || rp.HTTPGet.Host != "" {
					t.Errorf("readiness %+v", rp)
				}
				if q := c.Resources.Limits[ResourceGPU]; q.Value() != 2 {
					t.Errorf("gpu limit %v, want 2", q.String())
				}
				if _, ok := c.Resources.Requests[ResourceGPU]; ok {
					t.Error("gpu request set: extended resources take it from the limit")
				}
				if q := c.Resources.Requests[corev1.ResourceCPU]; q.MilliValue() != 250 {
					t.Errorf("cpu request %s, want 250m", q.String())
				}
				if q := c.Resources.Limits[corev1.ResourceMemory]; q.Value() != 256<<20 {
					t.Errorf("memory limit %s, want 256Mi", q.String())
				}
				if d.Spec.Template.Spec.HostNetwork || *d.Spec.Template.Spec.AutomountServiceAccountToken {
					t.Error("pod uses host network or mounts a token")
				}
				if o.Service.Name != "web" || o.Service.Spec.Ports[0].TargetPort != intstr.FromString(PortName) {
					t.Errorf("service %+v", o.Service)
				}
				if o.ConfigMap != nil {
					t.Error("configmap for an image deployment")
				}
			},
		},
		{
			name: "no health probes the port", yaml: "name: web\nruntime: {image: x, port: 5000}\n",
			check: func(t *testing.T, o Objects) {
				c := o.Deployment.Spec.Template.Spec.Containers[0]
				if c.ReadinessProbe.TCPSocket == nil || c.ReadinessProbe.HTTPGet != nil {
					t.Errorf("readiness %+v, want a TCP probe", c.ReadinessProbe)
				}
				if c.Ports[0].ContainerPort != 5000 || envMap(c.Env)["PORT"] != "5000" {
					t.Errorf("port %v env %v, want runtime.port 5000", c.Ports, c.Env)
				}
			},
		},
		{
			name: "host network", yaml: image, cfg: Config{HostNetwork: true},
			check: func(t *testing.T, o Objects) {
				ps := o.Deployment.Spec.Template.Spec
				c := ps.Containers[0]
				port := c.Ports[0].ContainerPort
				if !ps.HostNetwork || port < hostPortBase || port >= hostPortBase+hostPortSpan {
					t.Errorf("hostNetwork %v port %d, want a derived port", ps.HostNetwork, port)
				}
				if c.ReadinessProbe.HTTPGet.Host != "127.0.0.1" {
					t.Errorf("probe host %q, want 127.0.0.1", c.ReadinessProbe.HTTPGet.Host)
				}
				if s := o.Deployment.Spec.Strategy.RollingUpdate; s.MaxSurge.IntValue() != 0 || s.MaxUnavailable.IntValue() != 1 {
					t.Errorf("strategy %+v: one port per node forbids a surge", s)
				}
			},
		},
		{
			name: "name starting with a digit", yaml: "name: 3d\nruntime: {image: x}\n",
			check: func(t *testing.T, o Objects) {
				if o.Deployment.Name != "3d" || o.Service.Name != "m-3d" {
					t.Errorf("names %q %q", o.Deployment.Name, o.Service.Name)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := specOf(parse(t, tt.yaml))
			spec.Env = tt.extra
			o, err := Build(spec, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
			again, _ := Build(spec, tt.cfg)
			if again.Deployment.Annotations[AnnotationSpecHash] != o.Deployment.Annotations[AnnotationSpecHash] {
				t.Error("spec hash differs between two builds of one spec")
			}
		})
	}
}

func TestBuild_Mounts(t *testing.T) {
	dir := t.TempDir()
	model, large := filepath.Join(dir, "digits net.onnx"), filepath.Join(dir, "large.onnx")
	os.WriteFile(model, []byte("onnx-bytes"), 0o644)
	os.WriteFile(large, make([]byte, maxConfigMapFiles+1), 0o644)
	m := parse(t, "name: digits\nruntime: {image: tandem-onnx:latest}\n")

	spec := specOf(m)
	spec.Mounts = []backend.Mount{
		{Source: model, Target: "/models/digits.onnx", ReadOnly: true},
		{Source: dir, Target: "/data"},
	}
	o, err := Build(spec, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cm := o.ConfigMap
	if cm == nil || cm.Name != "digits-files" || len(cm.BinaryData) != 1 || string(cm.BinaryData["0-digits_net.onnx"]) != "onnx-bytes" || cm.Labels[backend.LabelManaged] != "true" {
		t.Fatalf("configmap %+v", cm)
	}
	ps := o.Deployment.Spec.Template.Spec
	want := []corev1.VolumeMount{
		{Name: "files", MountPath: "/models/digits.onnx", SubPath: "0-digits_net.onnx", ReadOnly: true},
		{Name: "host-1", MountPath: "/data"},
	}
	if !equality.Semantic.DeepEqual(ps.Containers[0].VolumeMounts, want) {
		t.Errorf("volume mounts %+v, want %+v", ps.Containers[0].VolumeMounts, want)
	}
	if len(ps.Volumes) != 2 || ps.Volumes[0].HostPath.Path != dir || ps.Volumes[1].ConfigMap.Name != cm.Name {
		t.Errorf("volumes %+v", ps.Volumes)
	}
	before := o.Deployment.Spec.Template.Annotations[AnnotationFilesHash]
	os.WriteFile(model, []byte("new-bytes"), 0o644)
	o2, _ := Build(spec, Config{})
	if after := o2.Deployment.Spec.Template.Annotations[AnnotationFilesHash]; before == "" || after == before {
		t.Errorf("files hash %q -> %q: a changed file must roll the pods", before, after)
	}

	spec.Mounts = []backend.Mount{{Source: large, Target: "/models/large.onnx"}}
	if _, err := Build(spec, Config{}); !errors.Is(err, ErrFilesTooLarge) {
		t.Errorf("large file: %v, want ErrFilesTooLarge", err)
	}
}

func TestExport(t *testing.T) {
	spec := specOf(parse(t, "name: web\nruntime: {image: x, health: /h}\n"))
	var buf bytes.Buffer
	if err := Export(&buf, spec, Config{Namespace: "models"}); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, bad := range []string{"status:", "creationTimestamp", "null"} {
		if strings.Contains(text, bad) {
			t.Errorf("export contains %q:\n%s", bad, text)
		}
	}
	docs := strings.Split(text, "---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2:\n%s", len(docs), text)
	}
	want, _ := Build(spec, Config{Namespace: "models"})
	if dep0 := strings.SplitN(text, "---\n", 2)[0]; strings.Contains(dep0, "replicas:") {
		t.Errorf("exported Deployment sets replicas, which kubectl apply would fight tandem over:\n%s", dep0)
	}
	want.Deployment.Spec.Replicas = nil
	var dep appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &dep); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(dep.Spec, want.Deployment.Spec) || dep.Kind != "Deployment" || dep.Namespace != "models" {
		t.Errorf("exported Deployment differs from what Apply creates:\n%s", docs[0])
	}
	var svc corev1.Service
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &svc); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(svc.Spec, want.Service.Spec) || svc.Kind != "Service" {
		t.Errorf("exported Service differs:\n%s", docs[1])
	}
}

// fakeCluster is client-go's fake clientset with what it lacks: the
// Deployment scale subresource, and a signal once the pod watch is open.
func fakeCluster(t *testing.T, objs ...runtime.Object) (*fake.Clientset, <-chan struct{}) {
	c := fake.NewSimpleClientset(objs...)
	c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		s := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		obj, err := c.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("deployments"), a.GetNamespace(), s.Name)
		if err != nil {
			return true, nil, err
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		d.Spec.Replicas = &s.Spec.Replicas
		return true, s, c.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("deployments"), d, a.GetNamespace())
	})
	opened := make(chan struct{})
	var once sync.Once
	c.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.Tracker().Watch(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, a.GetNamespace())
		once.Do(func() { close(opened) })
		return true, w, err
	})
	return c, opened
}

func writes(c *fake.Clientset, resource string) []string {
	var out []string
	for _, a := range c.Actions() {
		if a.GetResource().Resource == resource && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			out = append(out, a.GetVerb()+" "+a.GetSubresource())
		}
	}
	return out
}

func TestBackend_Apply(t *testing.T) {
	ctx := t.Context()
	c, _ := fakeCluster(t)
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()
	m := parse(t, "name: web\nruntime: {image: x}\n")
	if n, _ := b.Replicas(ctx, "web"); n != -1 {
		t.Fatalf("Replicas before Apply = %d, want -1", n)
	}
	if err := b.Apply(ctx, specOf(m)); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Replicas(ctx, "web"); n != 0 {
		t.Fatalf("Replicas after Apply = %d, want 0", n)
	}
	if err := b.Scale(ctx, "web", 3); err != nil {
		t.Fatal(err)
	}
	before := len(writes(c, "deployments"))
	if err := b.Apply(ctx, specOf(m)); err != nil {
		t.Fatal(err)
	}
	if w := writes(c, "deployments")[before:]; len(w) != 0 {
		t.Errorf("re-applying one spec wrote %v", w)
	}
	m.Runtime.Env = map[string]string{"X": "1"}
	if err := b.Apply(ctx, specOf(m)); err != nil {
		t.Fatal(err)
	}
	d, _ := c.AppsV1().Deployments(DefaultNamespace).Get(ctx, "web", metav1.GetOptions{})
	if *d.Spec.Replicas != 3 || envMap(d.Spec.Template.Spec.Containers[0].Env)["X"] != "1" {
		t.Errorf("after a new revision: replicas %d env %v; want 3 and X=1", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Env)
	}
	if d.Labels[backend.LabelRevision] != m.Hash() {
		t.Errorf("revision label %q, want %q", d.Labels[backend.LabelRevision], m.Hash())
	}

	if err := b.Scale(ctx, "nope", 1); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Scale of an unknown deployment: %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Replicas(ctx, "web"); n != -1 {
		t.Errorf("Replicas after Delete = %d, want -1", n)
	}
	if _, err := c.CoreV1().Services(DefaultNamespace).Get(ctx, "web", metav1.GetOptions{}); err == nil {
		t.Error("service left after Delete")
	}
	if err := b.Delete(ctx, "web"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestBackend_LeavesForeignObjects(t *testing.T) {
	ctx := t.Context()
	foreign := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: DefaultNamespace, Labels: map[string]string{"app": "web"}}}
	c, _ := fakeCluster(t, foreign)
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()
	if err := b.Apply(ctx, specOf(parse(t, "name: web\nruntime: {image: x}\n"))); !errors.Is(err, ErrNotManaged) {
		t.Errorf("Apply over a foreign Deployment: %v, want ErrNotManaged", err)
	}
	if n, _ := b.Replicas(ctx, "web"); n != -1 {
		t.Errorf("Replicas of a foreign Deployment = %d, want -1", n)
	}
	if err := b.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AppsV1().Deployments(DefaultNamespace).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("Delete removed a foreign Deployment: %v", err)
	}
}

func pod(name, dep, ip string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: DefaultNamespace, UID: k8stypes.UID("uid-" + name),
			Labels: map[string]string{backend.LabelManaged: "true", backend.LabelDeployment: dep, backend.LabelRevision: "r1"}},
		Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: ContainerName,
			Ports: []corev1.ContainerPort{{Name: PortName, ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestBackend_Watch(t *testing.T) {
	ctx := t.Context()
	c, opened := fakeCluster(t, pod("web-a", "web", "10.0.0.1", true), pod("other-a", "other", "10.0.0.9", true))
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()
	w, err := b.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	next := func() []string {
		t.Helper()
		select {
		case set := <-w:
			var addrs []string
			for _, i := range set {
				addrs = append(addrs, i.ID+"@"+i.Addr)
			}
			return addrs
		case <-time.After(10 * time.Second):
			t.Fatal("no set within 10s")
			return nil
		}
	}
	if got := next(); !slices.Equal(got, []string{"web-a@10.0.0.1:8080"}) {
		t.Fatalf("first set %v", got)
	}
	<-opened
	pods := c.CoreV1().Pods(DefaultNamespace)
	// A pod that is not ready yet changes nothing.
	pods.Create(ctx, pod("web-b", "web", "10.0.0.2", false), metav1.CreateOptions{})
	pods.Update(ctx, pod("web-b", "web", "10.0.0.2", true), metav1.UpdateOptions{})
	if got := next(); !slices.Equal(got, []string{"web-a@10.0.0.1:8080", "web-b@10.0.0.2:8080"}) {
		t.Fatalf("after web-b is ready: %v", got)
	}
	// Terminating pods leave the set at once.
	term := pod("web-a", "web", "10.0.0.1", true)
	term.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	pods.Update(ctx, term, metav1.UpdateOptions{})
	if got := next(); !slices.Equal(got, []string{"web-b@10.0.0.2:8080"}) {
		t.Fatalf("after web-a terminates: %v", got)
	}
	pods.Delete(ctx, "web-b", metav1.DeleteOptions{})
	if got := next(); len(got) != 0 {
		t.Fatalf("after web-b is deleted: %v", got)
	}
}

func TestBackend_WatchEndsWithContext(t *testing.T) {
	c, _ := fakeCluster(t)
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()
	ctx, cancel := context.WithCancel(t.Context())
	w, err := b.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	<-w
	cancel()
	for range w {
	}
	b.Close()
	if _, err := b.Watch(t.Context(), "web"); err == nil {
		t.Error("Watch on a closed backend succeeded")
	}
}

func TestBackend_IsLeader(t *testing.T) {
	c, _ := fakeCluster(t)
	const d = time.Second
	a := NewWithClient(c, Config{Identity: "a", LeaseDuration: d, Logger: discardLogger()})
	defer a.Close()
	waitFor(t, 10*d, "a to lead", a.IsLeader)
	bb := NewWithClient(c, Config{Identity: "b", LeaseDuration: d, Logger: discardLogger()})
	defer bb.Close()
	for range 5 {
		if bb.IsLeader() {
			t.Fatal("b leads while a holds the lease")
		}
		time.Sleep(d / 5)
	}
	a.Close()
	waitFor(t, 10*d, "b to take over", bb.IsLeader)
	if a.IsLeader() {
		t.Error("a leads after Close")
	}
}

func TestLeaseTimes(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 15 * time.Second, time.Minute} {
		renew, retry := leaseTimes(d)
		// client-go's rules: duration > renew deadline > 1.2 * retry period.
		if !(d > renew && float64(renew) > 1.2*float64(retry) && retry > 0) {
			t.Errorf("lease %s: renew %s retry %s break client-go's rules", d, renew, retry)
		}
	}
}

func TestBackend_WatchProbesHostNetworkPods(t *testing.T) {
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])

	ctx := t.Context()
	c, opened := fakeCluster(t)
	b := NewWithClient(c, Config{HostNetwork: true, Logger: discardLogger()})
	defer b.Close()
	w, err := b.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	<-w
	<-opened
	// Scheduled, not ready by the kubelet, and no pod IP reported yet.
	p := pod("web-a", "web", "", false)
	p.Spec.HostNetwork = true
	p.Spec.Containers[0].Ports[0].ContainerPort = int32(port)
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health"}}}
	c.CoreV1().Pods(DefaultNamespace).Create(ctx, p, metav1.CreateOptions{})
	select {
	case set := <-w:
		t.Fatalf("reported %v while the pod answers 503", set)
	case <-time.After(300 * time.Millisecond):
	}
	healthy.Store(true)
	select {
	case set := <-w:
		if len(set) != 1 || set[0].Addr != "127.0.0.1:"+strconv.Itoa(port) {
			t.Fatalf("set %v, want the pod at 127.0.0.1:%d", set, port)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pod answering was not reported")
	}
	// A restart is the kubelet's news: tandem's own probe no longer counts.
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, RestartCount: 1}}
	c.CoreV1().Pods(DefaultNamespace).Update(ctx, p, metav1.UpdateOptions{})
	select {
	case set := <-w:
		if len(set) != 0 {
			t.Fatalf("set %v after a restart the kubelet has not judged, want empty", set)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change after the restart")
	}
}
