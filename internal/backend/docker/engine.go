package docker

import (
	"context"

	"github.com/moby/moby/client"
)

// engine is the part of the Docker Engine API the backend calls. The SDK's
// *client.Client implements it; unit tests use a hand-written fake
// (fakeEngine) that records calls and keeps containers in memory.
type engine interface {
	Info(ctx context.Context, opts client.InfoOptions) (client.SystemInfoResult, error)
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	// ContainerWait's channels are not closed: exactly one of them gets a value.
	ContainerWait(ctx context.Context, id string, opts client.ContainerWaitOptions) client.ContainerWaitResult
	ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerKill(ctx context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerStatPath(ctx context.Context, id string, opts client.ContainerStatPathOptions) (client.ContainerStatPathResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerLogs(ctx context.Context, id string, opts client.ContainerLogsOptions) (client.ContainerLogsResult, error)
	Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult
	Close() error
}

var _ engine = (*client.Client)(nil)
