package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The tenant catalog's Secret: created by the first write, one data key
// per tenant, a conflicting write made again on the other's, a change's
// error writes nothing.
func TestBackend_TenantCatalog(t *testing.T) {
	ctx := t.Context()
	c := fake.NewSimpleClientset()
	// The reactor below is registered before the backend starts its
	// informers: the fake's reactor list is not safe to change while they
	// list (a race a full run found). It refuses only once armed.
	var conflicts atomic.Int32
	c.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts.Add(-1) < 0 {
			conflicts.Store(0)
			return false, nil, nil
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, TenantSecret, errors.New("changed"))
	})
	b := NewWithClient(c, Config{Logger: discardLogger()})
	defer b.Close()

	if recs, exists, err := b.TenantRecords(ctx); err != nil || exists || len(recs) != 0 {
		t.Fatalf("before any write: %v %v %v, want no catalog", recs, exists, err)
	}
	put := func(name, val string) error {
		return b.ChangeTenantRecord(ctx, name, func([]byte) ([]byte, error) { return []byte(val), nil })
	}
	if err := put("acme", "1"); err != nil {
		t.Fatal(err)
	}
	if err := put("other", "2"); err != nil {
		t.Fatal(err)
	}
	recs, exists, err := b.TenantRecords(ctx)
	if err != nil || !exists || string(recs["acme"]) != "1" || string(recs["other"]) != "2" {
		t.Fatalf("after two writes: %q %v %v", recs, exists, err)
	}

	// Another process writes between this one's read and its update: the
	// API server refuses the update (409), the change is made again on
	// what that one wrote.
	conflicts.Store(1)
	calls := 0
	err = b.ChangeTenantRecord(ctx, "acme", func(cur []byte) ([]byte, error) {
		calls++
		return append(cur, '+'), nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("change after a conflict: %v, %d calls, want 2", err, calls)
	}
	recs, _, _ = b.TenantRecords(ctx)
	if string(recs["acme"]) != "1+" {
		t.Fatalf("acme = %q, want 1+ (the change applied once)", recs["acme"])
	}

	// A change's error writes nothing; nil deletes.
	boom := errors.New("exists")
	if err := b.ChangeTenantRecord(ctx, "acme", func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("change error: %v", err)
	}
	if err := b.ChangeTenantRecord(ctx, "acme", func(cur []byte) ([]byte, error) {
		if cur == nil {
			t.Fatal("acme's record read as absent")
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = b.TenantRecords(ctx)
	if _, ok := recs["acme"]; ok || string(recs["other"]) != "2" {
		t.Fatalf("after deleting acme: %q", recs)
	}
	if err := b.ChangeTenantRecord(ctx, "nobody", func(cur []byte) ([]byte, error) {
		if cur != nil {
			t.Fatalf("an absent record read as %q", cur)
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// On the real API server: three processes (three Backends, three
// clients) each adding 10 records one after another (as a registry does,
// one write at a time), racing each other on the one Secret's
// resourceVersion, lose none of them.
func TestBackend_TenantCatalogCluster(t *testing.T) {
	needCluster(t)
	ctx := t.Context()
	admin := clusterClient(t)
	ns := uniqueName("tenants")
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for p := range 3 {
		b := NewWithClient(clusterClient(t), Config{Namespace: ns, Identity: fmt.Sprintf("p%d", p), Logger: discardLogger()})
		t.Cleanup(func() { b.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				name := fmt.Sprintf("t%d-%d", p, i)
				errs <- b.ChangeTenantRecord(ctx, name, func(cur []byte) ([]byte, error) {
					if cur != nil {
						return nil, fmt.Errorf("%s exists already", name)
					}
					return []byte(name), nil
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	b := NewWithClient(admin, Config{Namespace: ns, Logger: discardLogger()})
	defer b.Close()
	recs, exists, err := b.TenantRecords(ctx)
	if err != nil || !exists || len(recs) != 30 {
		t.Fatalf("after 30 racing writes: %d records (exists %v, %v), want 30", len(recs), exists, err)
	}
	for name, v := range recs {
		if string(v) != name {
			t.Fatalf("record %s = %q", name, v)
		}
	}
}
