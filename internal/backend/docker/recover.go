package docker

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"tandem/internal/backend"
)

// Recover finds the containers an earlier tandem process with the same data
// directory left behind (labels tandem.managed=true and tandem.data-dir).
// Running ones are tracked again and returned, for the caller to adopt or
// stop; exited or never-started ones are removed. Containers of other data
// directories are left alone. Instances already tracked are skipped.
func (b *Backend) Recover(ctx context.Context) ([]backend.Instance, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	f := client.Filters{}.
		Add("label", backend.LabelManaged+"=true").
		Add("label", LabelDataDir+"="+b.dataDir)
	list, err := b.eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("listing tandem's containers: %w", err)
	}
	var out []backend.Instance
	for _, c := range list.Items {
		id := c.Labels[backend.LabelInstance]
		b.mu.Lock()
		_, tracked := b.insts[id]
		b.mu.Unlock()
		if tracked {
			continue
		}
		if c.State != container.StateRunning || id == "" {
			b.log.Info("removing leftover container", "instance", id, "container", shortID(c.ID), "state", c.State)
			b.remove(c.ID)
			continue
		}
		info, mem, err := b.recovered(ctx, c)
		if err != nil {
			b.log.Warn("removing a container that cannot be adopted", "instance", id, "container", shortID(c.ID), "err", err)
			b.remove(c.ID)
			continue
		}
		in := &inst{info: info, cid: c.ID, done: make(chan struct{}), memLimit: mem}
		if !b.track(in) {
			return out, ErrClosed
		}
		b.log.Info("recovered container", "instance", id, "deployment", info.Deployment, "addr", info.Addr)
		out = append(out, info)
	}
	return out, nil
}

// recovered rebuilds a running container's Instance from its labels and
// the engine's view of it.
// It also returns the container's memory limit.
func (b *Backend) recovered(ctx context.Context, c container.Summary) (backend.Instance, int64, error) {
	info := backend.Instance{
		ID:         c.Labels[backend.LabelInstance],
		Deployment: c.Labels[backend.LabelDeployment],
		Revision:   c.Labels[backend.LabelRevision],
		StartedAt:  time.Unix(c.Created, 0),
	}
	insp, err := b.eng.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		return info, 0, err
	}
	ci := insp.Container
	var mem int64
	if ci.HostConfig != nil {
		mem = ci.HostConfig.Memory
	}
	if ci.State != nil {
		if t, err := time.Parse(time.RFC3339Nano, ci.State.StartedAt); err == nil {
			info.StartedAt = t
		}
	}
	if hp, ok := c.Labels[LabelHostPort]; ok {
		ap, err := parseHostPort(hp)
		if err != nil {
			return info, 0, fmt.Errorf("label %s: %w", LabelHostPort, err)
		}
		info.Addr = ap.String()
		return info, mem, nil
	}
	if ci.NetworkSettings != nil {
		for port := range ci.NetworkSettings.Ports {
			if addr, err := publishedAddr(ci, port); err == nil {
				if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().IsLoopback() {
					info.Addr = addr
					return info, mem, nil
				}
			}
		}
	}
	return info, 0, fmt.Errorf("no published port on 127.0.0.1")
}
