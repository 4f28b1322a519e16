package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"tandem/internal/backend"
)

// Apply creates or updates the Deployment, Service and (for spec.Mounts,
// such as a runtime.onnx model) ConfigMap of spec's deployment. A new Deployment starts at 0 replicas;
// an existing one keeps its replica count, and is not written at all when
// what tandem would write has not changed (a restart adopting it). It
// refuses objects tandem did not make (ErrNotManaged).
func (b *Backend) Apply(ctx context.Context, spec backend.Spec) error {
	objs, err := Build(spec, b.cfg)
	if err != nil {
		return fmt.Errorf("kubernetes: apply %s: %w", spec.Deployment, err)
	}
	name := objs.Deployment.Name
	wrap := func(what string, err error) error {
		return fmt.Errorf("kubernetes: apply %s: %s: %w", name, what, err)
	}
	if objs.ConfigMap == nil {
		// An earlier revision may have had files.
		cms := b.client.CoreV1().ConfigMaps(b.cfg.Namespace)
		cur, err := cms.Get(ctx, filesName(name), metav1.GetOptions{})
		if err == nil && managed(cur.Labels) {
			if err := cms.Delete(ctx, cur.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return wrap("configmap", err)
			}
		}
	}
	if cm := objs.ConfigMap; cm != nil {
		api := b.client.CoreV1().ConfigMaps(b.cfg.Namespace)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := api.Get(ctx, cm.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				_, err = api.Create(ctx, cm, metav1.CreateOptions{})
				return err
			}
			if err != nil {
				return err
			}
			if !managed(cur.Labels) {
				return ErrNotManaged
			}
			if maps.EqualFunc(cur.BinaryData, cm.BinaryData, func(a, b []byte) bool { return string(a) == string(b) }) &&
				maps.Equal(cur.Labels, cm.Labels) {
				return nil
			}
			cur.Labels, cur.BinaryData, cur.Data = cm.Labels, cm.BinaryData, nil
			_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return wrap("configmap", err)
		}
	}

	deps := b.client.AppsV1().Deployments(b.cfg.Namespace)
	want := objs.Deployment
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := deps.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = deps.Create(ctx, want, metav1.CreateOptions{})
			if err == nil {
				b.log.Info("created deployment", "deployment", name, "revision", spec.Revision)
			}
			return err
		}
		if err != nil {
			return err
		}
		if !managed(cur.Labels) {
			return ErrNotManaged
		}
		if cur.Annotations[AnnotationSpecHash] == want.Annotations[AnnotationSpecHash] && maps.Equal(cur.Labels, want.Labels) {
			if annotationsHeld(cur.Annotations, spec.Annotations) {
				return nil
			}
			// Same pods: only tandem's record changed; no rollout.
			next := cur.DeepCopy()
			next.Annotations = mergeAnnotations(cur.Annotations, spec.Annotations)
			_, err = deps.Update(ctx, next, metav1.UpdateOptions{})
			return err
		}
		next := cur.DeepCopy()
		next.Labels, next.Annotations = want.Labels, mergeAnnotations(cur.Annotations, want.Annotations)
		replicas := cur.Spec.Replicas
		next.Spec = want.Spec
		next.Spec.Replicas = replicas
		_, err = deps.Update(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			b.log.Info("updated deployment", "deployment", name, "revision", spec.Revision)
		}
		return err
	})
	if err != nil {
		return wrap("deployment", err)
	}

	svcs := b.client.CoreV1().Services(b.cfg.Namespace)
	svc := objs.Service
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := svcs.Get(ctx, svc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if !managed(cur.Labels) {
			return ErrNotManaged
		}
		if maps.Equal(cur.Labels, svc.Labels) && maps.Equal(cur.Spec.Selector, svc.Spec.Selector) &&
			len(cur.Spec.Ports) == 1 && cur.Spec.Ports[0].Port == svc.Spec.Ports[0].Port &&
			cur.Spec.Ports[0].TargetPort == svc.Spec.Ports[0].TargetPort {
			return nil
		}
		// Keep what the API server assigned (the cluster IP).
		cur.Labels, cur.Spec.Selector, cur.Spec.Ports = svc.Labels, svc.Spec.Selector, svc.Spec.Ports
		_, err = svcs.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return wrap("service", err)
	}
	return nil
}

// Scale sets the Deployment's replica count through the scale subresource,
// in one request. It does not wait for replicas. An unknown deployment
// fails with backend.ErrNotFound.
func (b *Backend) Scale(ctx context.Context, deployment string, replicas int) error {
	if replicas < 0 {
		return fmt.Errorf("kubernetes: scale %s to %d: negative", deployment, replicas)
	}
	s := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: deployment, Namespace: b.cfg.Namespace},
		Spec:       autoscalingv1.ScaleSpec{Replicas: int32(replicas)},
	}
	// No resourceVersion: the last writer wins, which is what the single
	// leader (or a wake from zero) means.
	_, err := b.client.AppsV1().Deployments(b.cfg.Namespace).UpdateScale(ctx, deployment, s, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: scale %s: %w", deployment, backend.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: scale %s to %d: %w", deployment, replicas, err)
	}
	return nil
}

// Replicas returns the replica count the Deployment asks for, or -1 when
// there is no Deployment of that name made by tandem.
func (b *Backend) Replicas(ctx context.Context, deployment string) (int, error) {
	d, err := b.client.AppsV1().Deployments(b.cfg.Namespace).Get(ctx, deployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kubernetes: replicas of %s: %w", deployment, err)
	}
	if !managed(d.Labels) {
		return -1, nil
	}
	if d.Spec.Replicas == nil {
		return 1, nil // the API server's default
	}
	return int(*d.Spec.Replicas), nil
}

// Delete removes the deployment's Deployment, Service and ConfigMap; the
// garbage collector then removes its pods. Objects already gone are not an
// error; objects tandem did not make are left alone.
func (b *Backend) Delete(ctx context.Context, deployment string) error {
	bg := metav1.DeletePropagationBackground
	del := func(kind, name string, get func() (metav1.Object, error), remove func(metav1.DeleteOptions) error) error {
		obj, err := get()
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kubernetes: delete %s %s: %w", kind, name, err)
		}
		if !managed(obj.GetLabels()) || obj.GetLabels()[backend.LabelDeployment] != deployment {
			return nil
		}
		uid := obj.GetUID()
		err = remove(metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("kubernetes: delete %s %s: %w", kind, name, err)
		}
		return nil
	}
	ns := b.cfg.Namespace
	deps, svcs, cms := b.client.AppsV1().Deployments(ns), b.client.CoreV1().Services(ns), b.client.CoreV1().ConfigMaps(ns)
	svcName, cmName := serviceName(deployment), filesName(deployment)
	return errors.Join(
		del("deployment", deployment,
			func() (metav1.Object, error) { return deps.Get(ctx, deployment, metav1.GetOptions{}) },
			func(o metav1.DeleteOptions) error { return deps.Delete(ctx, deployment, o) }),
		del("service", svcName,
			func() (metav1.Object, error) { return svcs.Get(ctx, svcName, metav1.GetOptions{}) },
			func(o metav1.DeleteOptions) error { return svcs.Delete(ctx, svcName, o) }),
		del("configmap", cmName,
			func() (metav1.Object, error) { return cms.Get(ctx, cmName, metav1.GetOptions{}) },
			func(o metav1.DeleteOptions) error { return cms.Delete(ctx, cmName, o) }),
	)
}

func managed(labels map[string]string) bool { return labels[backend.LabelManaged] == "true" }

func mergeAnnotations(cur, want map[string]string) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, want)
	return out
}

// annotationsHeld reports whether cur already carries every want.
func annotationsHeld(cur, want map[string]string) bool {
	for k, v := range want {
		if cur[k] != v {
			return false
		}
	}
	return true
}

// Annotation implements backend.Catalog: the named annotation of every
// Deployment tandem manages in the namespace, by deployment name.
func (b *Backend) Annotation(ctx context.Context, key string) (map[string]string, error) {
	list, err := b.client.AppsV1().Deployments(b.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: backend.LabelManaged + "=true"})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list deployments: %w", err)
	}
	out := make(map[string]string, len(list.Items))
	for _, d := range list.Items {
		if name := d.Labels[backend.LabelDeployment]; name != "" {
			out[name] = d.Annotations[key]
		}
	}
	return out, nil
}
