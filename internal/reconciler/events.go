package reconciler

import (
	"time"

	"tandem/internal/backend"
	"tandem/internal/manifest"
)

// Event is an input to Core.Step. Every event a deployment's loop sees
// (a tick, a request queueing, an instance starting, becoming ready or
// exiting, an update, the platform's endpoints) is one of the types below.
type Event interface{ event() }

// Tick is an evaluation: the controller's tick, or requests that queued
// (coalesced: one Tick for any number of them). The runtime samples the
// pool and fills it in; the core records it in its window and decides.
type Tick struct {
	// Avg is the concurrency (in flight plus queued) averaged over the Dt
	// before now: the pool's integral, not a point sample.
	Avg float64
	Dt  time.Duration
	// LastActive is the last moment concurrency was above zero.
	LastActive time.Time
	Queued     int
	InFlight   int
	// Busy is the requests in flight on each ready instance (scale-down
	// drains the least busy first). May be nil.
	Busy map[string]int
	// Remote is the concurrency other tandem processes reported for this
	// deployment (replica mode, leader only); it adds to Avg.
	Remote float64
	// Leader says whether this process may change replica counts (replica
	// mode; instance mode ignores it).
	Leader bool
	// Floor is an extra minimum from outside the autoscaler (prewarm,
	// or a request that asked for a warm instance): the size is at least
	// min(Floor, scaling.max). 0 adds nothing.
	Floor int
}

// Started says Backend.Start returned for an instance.
type Started struct {
	ID string
	// Addr and At are what the backend reported (zero on error).
	Addr string
	At   time.Time
	Err  error
}

// Ready says an instance's readiness probe ended: Err nil when it
// passed. Canceled says the probe was cancelled (the instance exited or
// was retired; that event tells the story).
type Ready struct {
	ID       string
	Err      error
	Canceled bool
}

// Exited says an instance ended.
type Exited struct {
	ID   string
	Exit backend.Exit
}

// Update is a new manifest (a new revision, or the same revision with
// other settings).
type Update struct{ Manifest *manifest.Manifest }

// Endpoints is a replica platform's ready set (replica mode).
type Endpoints struct{ Set []backend.Instance }

// Applied is the result of an ApplyObjects effect (replica mode):
// Replicas is the count the platform runs (-1 unknown).
type Applied struct {
	Replicas int
	Err      error
}

// Scaled is the result of a Scale effect (replica mode).
type Scaled struct {
	N   int
	Err error
}

// PlatformError is a replica platform failing outside an effect (its
// endpoint watch ended, for example).
type PlatformError struct{ Err error }

// Stop ends the deployment: waiting requests fail, instances drain and stop.
type Stop struct{}

func (Tick) event()          {}
func (Started) event()       {}
func (Ready) event()         {}
func (Exited) event()        {}
func (Update) event()        {}
func (Endpoints) event()     {}
func (Applied) event()       {}
func (Scaled) event()        {}
func (PlatformError) event() {}
func (Stop) event()          {}

// Effect is an output of Core.Step, for the runtime to apply in order.
type Effect interface{ effect() }

// StartInstance asks the backend to start an instance of revision Rev.
// Trigger is when the decision was taken (the cost meter's start).
type StartInstance struct {
	ID, Rev  string
	Manifest *manifest.Manifest
	Trigger  time.Time
	// Floor: a hybrid deployment's floor tier (else burst, or not hybrid).
	Floor bool
}

// SetTier moves an instance to a hybrid deployment's floor tier (a burst
// instance taking the place of a floor instance that is gone).
type SetTier struct {
	ID    string
	Floor bool
}

// WatchInstance follows a started instance: its exit, and its readiness
// probe (each reported back as Exited and Ready). Trigger is set for an
// instance this process decided to start (zero for an adopted one).
type WatchInstance struct {
	ID, Addr string
	Trigger  time.Time
}

// AddToPool puts a ready instance in rotation (and starts metering it as
// ready). Startup is set for an instance this process started (not
// adopted, not a platform replica): its cold start's instants.
type AddToPool struct {
	ID, Addr string
	Startup  *Startup
	// Floor: a hybrid deployment's floor instance, which the balancer
	// fills (up to target_concurrency) before burst ones.
	Floor bool
}

// Startup is when an instance's cold start passed each point: the
// decision to start it, the backend's own start, Start returning, ready.
type Startup struct {
	Trigger, Launched, Started, Ready time.Time
}

// Retire takes an instance out: a ready one leaves the pool, drains its
// requests, then stops; a starting one has its start cancelled and stops.
type Retire struct {
	ID    string
	Drain bool
}

// Kill stops an instance at once (it did not become ready in time).
type Kill struct{ ID string }

// Gone says an instance is gone: it leaves the pool (its in-flight
// requests learn Exit) and the cost meter stops metering it.
type Gone struct {
	ID   string
	Exit backend.Exit
}

// FailWaiters answers every request waiting for an instance with an error
// (nothing is ready or on its way).
type FailWaiters struct {
	Code string // problem code: "instance_failed", "platform_error"
	Err  error
}

// ClosePool fails waiting requests and refuses new ones (Stop).
type ClosePool struct{}

// WakeAt asks for a Tick at At (a start held back by backoff).
type WakeAt struct{ At time.Time }

// ApplyObjects asks a replica platform to create or update the
// deployment's objects; the runtime answers with Applied.
type ApplyObjects struct{ Manifest *manifest.Manifest }

// Scale asks a replica platform to run N replicas; the runtime answers
// with Scaled.
type Scale struct{ N int }

// Metered tells the cost meter the deployment's manifest (its size and
// mode) changed.
type Metered struct{ Manifest *manifest.Manifest }

// InstanceExit counts an instance ending, by reason (metrics).
type InstanceExit struct{ Reason string }

// PanicStarted counts a switch into panic mode (metrics).
type PanicStarted struct{}

// Failure is an error the runtime logs (a warning): an instance or the
// platform failed. RetryIn is the backoff before the next start.
type Failure struct {
	Err     error
	RetryIn time.Duration
}

func (StartInstance) effect() {}
func (WatchInstance) effect() {}
func (AddToPool) effect()     {}
func (SetTier) effect()       {}
func (Retire) effect()        {}
func (Kill) effect()          {}
func (Gone) effect()          {}
func (FailWaiters) effect()   {}
func (ClosePool) effect()     {}
func (WakeAt) effect()        {}
func (ApplyObjects) effect()  {}
func (Scale) effect()         {}
func (Metered) effect()       {}
func (InstanceExit) effect()  {}
func (PanicStarted) effect()  {}
func (Failure) effect()       {}
