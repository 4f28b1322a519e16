package kubernetes

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The lease holder publishes its peer address on the Lease; followers find
// it there; a new holder replaces it, and giving the lease up removes it.
func TestBackend_LeaderAddr(t *testing.T) {
	c, _ := fakeCluster(t)
	const d = time.Second
	a := NewWithClient(c, Config{Identity: "a", PeerAddr: "10.0.0.1:8081", LeaseDuration: d, Logger: discardLogger()})
	defer a.Close()
	waitFor(t, 10*d, "a to lead", a.IsLeader)
	if got := a.LeaderAddr(); got != "10.0.0.1:8081" {
		t.Fatalf("the leader's LeaderAddr = %q, want its own 10.0.0.1:8081", got)
	}
	bb := NewWithClient(c, Config{Identity: "b", PeerAddr: "10.0.0.2:8081", LeaseDuration: d, Logger: discardLogger()})
	defer bb.Close()
	waitFor(t, 10*d, "b to find a's address", func() bool { return bb.LeaderAddr() == "10.0.0.1:8081" })
	if bb.IsLeader() {
		t.Fatal("b leads while a holds the lease")
	}
	lease := func() *metav1.ObjectMeta {
		l, err := c.CoordinationV1().Leases(DefaultNamespace).Get(t.Context(), DefaultLeaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return &l.ObjectMeta
	}
	if got := lease().Annotations[AnnotationPeerAddr]; got != "10.0.0.1:8081" {
		t.Fatalf("Lease annotation %s = %q while a leads", AnnotationPeerAddr, got)
	}

	a.Close() // gives the lease up: no holder, no address
	if got, ok := lease().Annotations[AnnotationPeerAddr]; ok && !bb.IsLeader() {
		t.Fatalf("a released the lease but left its address %q on it", got)
	}
	waitFor(t, 10*d, "b to take over", bb.IsLeader)
	waitFor(t, 10*d, "b to publish its address", func() bool { return bb.LeaderAddr() == "10.0.0.2:8081" })
	if got := lease().Annotations[AnnotationPeerAddr]; got != "10.0.0.2:8081" {
		t.Fatalf("Lease annotation %s = %q once b leads", AnnotationPeerAddr, got)
	}
}

// A process without a peer address leads without publishing one.
func TestBackend_LeaderAddrNone(t *testing.T) {
	c, _ := fakeCluster(t)
	a := NewWithClient(c, Config{Identity: "a", LeaseDuration: time.Second, Logger: discardLogger()})
	defer a.Close()
	waitFor(t, 10*time.Second, "a to lead", a.IsLeader)
	if got := a.LeaderAddr(); got != "" {
		t.Fatalf("LeaderAddr = %q, want none", got)
	}
}
