package cost

import (
	"time"

	"tandem/internal/manifest"
)

// Amount is instance time, also weighted by the instances' size so that a
// price per vCPU-hour or GB-second applies directly.
type Amount struct {
	Seconds float64 `json:"seconds"`     // instance-seconds
	CPU     float64 `json:"cpu_seconds"` // vCPU-seconds
	GB      float64 `json:"gb_seconds"`  // GiB-seconds
	GPU     float64 `json:"gpu_seconds"` // GPU-seconds
}

// Plus returns a + b.
func (a Amount) Plus(b Amount) Amount {
	return Amount{a.Seconds + b.Seconds, a.CPU + b.CPU, a.GB + b.GB, a.GPU + b.GPU}
}

// Minus returns a - b.
func (a Amount) Minus(b Amount) Amount {
	return Amount{a.Seconds - b.Seconds, a.CPU - b.CPU, a.GB - b.GB, a.GPU - b.GPU}
}

// Of returns the amount of n instances of size s running for d.
func Of(s Size, n float64, d time.Duration) Amount {
	secs := n * d.Seconds()
	return Amount{Seconds: secs, CPU: secs * s.CPU, GB: secs * s.GB, GPU: secs * s.GPUs}
}

func (a *Amount) add(s Size, secs float64) {
	a.Seconds += secs
	a.CPU += secs * s.CPU
	a.GB += secs * s.GB
	a.GPU += secs * s.GPUs
}

// Usage is what a deployment used over some time, under one mode.
type Usage struct {
	// Mode is the mode the deployment ran under.
	Mode manifest.Mode `json:"mode"`
	// Starting is instance time from the decision to start an instance
	// until it was ready.
	Starting Amount `json:"starting"`
	// Busy is ready instance time with at least one request in flight.
	Busy Amount `json:"busy"`
	// Idle is ready (or draining) instance time with nothing in flight.
	Idle Amount `json:"idle"`
	// Burst is the part of the instance time spent by a hybrid
	// deployment's burst tier; the rest is its floor tier. Zero for the
	// other modes.
	Burst Tier `json:"burst"`
	// Floor is the instance time a dedicated deployment of the same size
	// keeps warm at least: max(1, scaling.min) instances for as long as the
	// deployment existed.
	Floor Amount `json:"floor"`
	// Requests answered, their total duration, and how many of them waited
	// for an instance to start.
	Requests       int64   `json:"requests"`
	RequestSeconds float64 `json:"request_seconds"`
	ColdStarts     int64   `json:"cold_starts"`
	// CacheHits are requests answered from the response cache, apart
	// from Requests: no instance took them.
	CacheHits int64 `json:"cache_hits,omitempty"`
	// Template is template process time (runtime.template), weighted by
	// the deployment's instance size; not instance time.
	Template Amount `json:"template,omitzero"`
}

// Total is all instance time: starting, busy and idle.
func (u Usage) Total() Amount { return u.Starting.Plus(u.Busy).Plus(u.Idle) }

// Plus returns u + v, keeping u's mode (v's when u has none).
func (u Usage) Plus(v Usage) Usage {
	if u.Mode == "" {
		u.Mode = v.Mode
	}
	u.Starting = u.Starting.Plus(v.Starting)
	u.Busy = u.Busy.Plus(v.Busy)
	u.Idle = u.Idle.Plus(v.Idle)
	u.Floor = u.Floor.Plus(v.Floor)
	u.Burst = Tier{u.Burst.Starting.Plus(v.Burst.Starting), u.Burst.Busy.Plus(v.Burst.Busy), u.Burst.Idle.Plus(v.Burst.Idle)}
	u.Requests += v.Requests
	u.RequestSeconds += v.RequestSeconds
	u.ColdStarts += v.ColdStarts
	u.CacheHits += v.CacheHits
	u.Template = u.Template.Plus(v.Template)
	return u
}

// Minus returns u - v (the usage between two readings of a running total),
// keeping u's mode.
func (u Usage) Minus(v Usage) Usage {
	u.Starting = u.Starting.Minus(v.Starting)
	u.Busy = u.Busy.Minus(v.Busy)
	u.Idle = u.Idle.Minus(v.Idle)
	u.Floor = u.Floor.Minus(v.Floor)
	u.Burst = Tier{u.Burst.Starting.Minus(v.Burst.Starting), u.Burst.Busy.Minus(v.Burst.Busy), u.Burst.Idle.Minus(v.Burst.Idle)}
	u.Requests -= v.Requests
	u.RequestSeconds -= v.RequestSeconds
	u.ColdStarts -= v.ColdStarts
	u.CacheHits -= v.CacheHits
	u.Template = u.Template.Minus(v.Template)
	return u
}

// Tier is one tier's instance time by state.
type Tier struct {
	Starting Amount `json:"starting"`
	Busy     Amount `json:"busy"`
	Idle     Amount `json:"idle"`
}

// Total is the tier's instance time.
func (t Tier) Total() Amount { return t.Starting.Plus(t.Busy).Plus(t.Idle) }
