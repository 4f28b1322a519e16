package docker

import (
	"context"
	"fmt"
	"path"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// defaultPath is the search path of a container whose image sets no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// checkProgram makes sure runtime.command's program exists in a created
// container. The engine's init (see makePlan) would otherwise start, fail
// to exec it and exit with code 127: a start that looks fine and an
// instance that dies at once, rather than a start error naming the
// program. The check looks the program up as exec does (PATH of the
// container's environment for a bare name) and runs once per image and
// program; when the engine cannot say, the start goes on.
func (b *Backend) checkProgram(ctx context.Context, cid, image, prog string) error {
	key := image + "\x00" + prog
	b.mu.Lock()
	found := b.found[key]
	b.mu.Unlock()
	if found {
		return nil
	}
	var candidates []string
	where := prog
	if path.IsAbs(prog) {
		candidates = []string{prog}
	} else {
		insp, err := b.eng.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
		if err != nil || insp.Container.Config == nil {
			return nil
		}
		cfg := insp.Container.Config
		if strings.Contains(prog, "/") {
			candidates = []string{path.Join("/", cfg.WorkingDir, prog)}
			where = candidates[0]
		} else {
			search := defaultPath
			for _, kv := range cfg.Env {
				if v, ok := strings.CutPrefix(kv, "PATH="); ok {
					search = v
				}
			}
			for _, dir := range strings.Split(search, ":") {
				if path.IsAbs(dir) {
					candidates = append(candidates, path.Join(dir, prog))
				}
			}
			where = "PATH " + search
		}
	}
	for _, c := range candidates {
		_, err := b.eng.ContainerStatPath(ctx, cid, client.ContainerStatPathOptions{Path: c})
		if err == nil || !cerrdefs.IsNotFound(err) {
			if err == nil {
				b.mu.Lock()
				b.found[key] = true
				b.mu.Unlock()
			}
			return nil
		}
	}
	return fmt.Errorf("runtime.command program %q not found in image %q (looked in %s)", prog, image, where)
}
