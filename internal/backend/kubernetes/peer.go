package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// AnnotationPeerAddr is the Lease annotation in which its holder publishes
// its peer address (Config.PeerAddr), where the other tandem processes
// report their traffic (internal/peerstats). The holder writes it with
// every acquire and renew, in the same update as the holder identity, so a
// reader never pairs one holder with another's address.
const AnnotationPeerAddr = "tandem.peer-addr"

// leaseView is the lease holder and its published address as this process
// last read or wrote the Lease.
type leaseView struct {
	holder, addr string
}

// peerLock is client-go's LeaseLock plus AnnotationPeerAddr: Create and
// Update (which only the holder, or the process taking over, calls) set it
// to this process's address, or remove it when the holder gives the lease
// up; every Get, Create and Update records who holds the lease and where
// it listens, for LeaderAddr.
type peerLock struct {
	meta     metav1.ObjectMeta
	client   coordinationv1client.LeasesGetter
	identity string
	addr     string
	seen     func(leaseView)

	// lease is the last Lease read or written; the elector calls the lock
	// from one goroutine, the mutex only guards against a misuse.
	mu    sync.Mutex
	lease *coordinationv1.Lease
}

var _ resourcelock.Interface = (*peerLock)(nil)

func (b *Backend) newLock() *peerLock {
	return &peerLock{
		meta:     metav1.ObjectMeta{Name: b.cfg.LeaseName, Namespace: b.cfg.Namespace},
		client:   b.client.CoordinationV1(),
		identity: b.cfg.Identity,
		addr:     b.cfg.PeerAddr,
		seen:     func(v leaseView) { b.lease.Store(&v) },
	}
}

func (l *peerLock) observe(lease *coordinationv1.Lease) {
	l.lease = lease
	var v leaseView
	if h := lease.Spec.HolderIdentity; h != nil {
		v.holder = *h
	}
	if v.holder != "" {
		v.addr = lease.Annotations[AnnotationPeerAddr]
	}
	l.seen(v)
}

// annotate sets (or, for a released lease, removes) this process's address
// on a Lease it is about to write as holder.
func (l *peerLock) annotate(lease *coordinationv1.Lease, ler resourcelock.LeaderElectionRecord) {
	if ler.HolderIdentity == "" || l.addr == "" {
		delete(lease.Annotations, AnnotationPeerAddr)
		return
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[AnnotationPeerAddr] = l.addr
}

// Get reads the Lease and returns its election record.
func (l *peerLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	lease, err := l.client.Leases(l.meta.Namespace).Get(ctx, l.meta.Name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observe(lease)
	rec := resourcelock.LeaseSpecToLeaderElectionRecord(&lease.Spec)
	raw, err := json.Marshal(*rec)
	if err != nil {
		return nil, nil, err
	}
	return rec, raw, nil
}

// Create creates the Lease with this process as holder.
func (l *peerLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: l.meta.Name, Namespace: l.meta.Namespace},
		Spec:       resourcelock.LeaderElectionRecordToLeaseSpec(&ler),
	}
	l.annotate(lease, ler)
	created, err := l.client.Leases(l.meta.Namespace).Create(ctx, lease, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observe(created)
	return nil
}

// Update writes the record (and this process's address) over the Lease
// last read.
func (l *peerLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	l.mu.Lock()
	if l.lease == nil {
		l.mu.Unlock()
		return errors.New("lease not initialized, call get or create first")
	}
	lease := l.lease.DeepCopy()
	l.mu.Unlock()
	lease.Spec = resourcelock.LeaderElectionRecordToLeaseSpec(&ler)
	l.annotate(lease, ler)
	updated, err := l.client.Leases(l.meta.Namespace).Update(ctx, lease, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observe(updated)
	return nil
}

// RecordEvent records nothing: tandem logs leadership changes itself.
func (l *peerLock) RecordEvent(string) {}

// Describe names the Lease.
func (l *peerLock) Describe() string { return fmt.Sprintf("%v/%v", l.meta.Namespace, l.meta.Name) }

// Identity is this process's name as a holder.
func (l *peerLock) Identity() string { return l.identity }
