package kubernetes

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TenantSecret is the Secret, in the backend's namespace, that holds the
// tenant catalog the tandem processes of one cluster share: one data key
// per tenant, its record (settings and its keys' SHA-256, never a key).
// It is a Secret, not a ConfigMap, because key hashes are credentials'
// verifiers and RBAC commonly keeps Secrets from readers of ConfigMaps.
const TenantSecret = "tandem-tenants"

// catalogRetryFor bounds the optimistic-concurrency retries of one
// change: another process writing the catalog at the same moment makes an
// update conflict, and the change is made again on what it wrote, after a
// random pause that doubles with each try up to catalogPauseMax (so that
// racing processes spread out; each process makes one change at a time).
// A count of tries was not enough: 16 lost one of 30 writes racing from
// three processes on a loaded machine.
const (
	catalogRetryFor = 10 * time.Second
	catalogPauseMax = 200 * time.Millisecond
)

// TenantRecords returns every tenant record in the catalog (the Secret's
// data, by tenant name); exists is false when the Secret is not there.
// One GET per call; the caller polls it (tenant.Registry.SyncCatalog).
func (b *Backend) TenantRecords(ctx context.Context) (map[string][]byte, bool, error) {
	s, err := b.client.CoreV1().Secrets(b.cfg.Namespace).Get(ctx, TenantSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kubernetes: get secret %s: %w", TenantSecret, err)
	}
	if s.Data == nil {
		return map[string][]byte{}, true, nil
	}
	return s.Data, true, nil
}

// ChangeTenantRecord applies change to tenant name's record in the
// catalog: read the Secret, change the one record, write it back with the
// resourceVersion read (the API server refuses it if another process
// wrote meanwhile, and the change is made again on what that one wrote).
// The Secret is created by the first change that writes a record.
func (b *Backend) ChangeTenantRecord(ctx context.Context, name string, change func(cur []byte) ([]byte, error)) error {
	secrets := b.client.CoreV1().Secrets(b.cfg.Namespace)
	deadline := time.Now().Add(catalogRetryFor)
	for try := 0; ; try++ {
		if try > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("kubernetes: secret %s: %d conflicting writes in a row over %s", TenantSecret, try, catalogRetryFor)
			}
			pause := min(catalogPauseMax, 5*time.Millisecond<<min(try, 10))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(rand.Int64N(int64(pause)))):
			}
		}
		s, err := secrets.Get(ctx, TenantSecret, metav1.GetOptions{})
		missing := apierrors.IsNotFound(err)
		if err != nil && !missing {
			return fmt.Errorf("kubernetes: get secret %s: %w", TenantSecret, err)
		}
		var cur []byte
		if !missing {
			if v, ok := s.Data[name]; ok {
				cur = v
				if cur == nil {
					cur = []byte{}
				}
			}
		}
		next, err := change(cur)
		if err != nil {
			return err
		}
		if missing {
			if next == nil {
				return nil
			}
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: TenantSecret, Namespace: b.cfg.Namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "tandem", "app.kubernetes.io/component": "tenant-catalog"}},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{name: next},
			}
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("kubernetes: create secret %s: %w", TenantSecret, err)
			}
			return nil
		}
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		if next == nil {
			if cur == nil {
				return nil
			}
			delete(s.Data, name)
		} else {
			s.Data[name] = next
		}
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("kubernetes: update secret %s: %w", TenantSecret, err)
		}
		return nil
	}
}
