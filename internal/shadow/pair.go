package shadow

import "sync/atomic"

// Bits of Pair.state.
const (
	primaryDone uint32 = 1 << iota // Primary or Abandon was called
	abandoned                      // the primary failed before answering
	shadowDone                     // the shadow answered, failed or was dropped
	shadowOff                      // the shadow failed or was dropped: nothing to compare
)

// Pair joins a primary answer and its shadow's. Both methods may be called
// from any goroutine, and on a nil Pair (a dropped copy), where they do
// nothing.
type Pair struct {
	s *series
	c Copy

	// Each side writes its own fields, then sets its bits in state; the side
	// that finds the other's done bit already set reads the other's fields
	// and records the verdict. Atomics order the writes before the read.
	state   atomic.Uint32
	pStatus int
	pSum    [32]byte
	sStatus int
	sSum    [32]byte
}

// Primary records the primary's status and the digest of its body (from a
// Digest). Call it exactly once, after the primary's answer has been
// written; call Abandon instead when the primary failed before answering.
func (p *Pair) Primary(status int, sum [32]byte) {
	if p == nil {
		return
	}
	p.pStatus, p.pSum = status, sum
	if old := p.state.Or(primaryDone); old&(shadowDone|shadowOff) == shadowDone {
		p.verdict()
	}
}

// Abandon records that the primary failed before answering: the shadow's
// answer is counted (status, latency) but not compared, and the pair is
// counted as unpaired. Call it instead of Primary, at most once.
func (p *Pair) Abandon() {
	if p == nil {
		return
	}
	if old := p.state.Or(primaryDone | abandoned); old&(shadowDone|shadowOff) == shadowDone {
		p.s.unpaired()
	}
}

// shadowDone records the shadow's answer.
func (p *Pair) shadowDone(status int, sum [32]byte) {
	p.sStatus, p.sSum = status, sum
	old := p.state.Or(shadowDone)
	switch {
	case old&abandoned != 0:
		p.s.unpaired()
	case old&primaryDone != 0:
		p.verdict()
	}
}

// shadowFailed counts the shadow as an error at once: there is nothing to
// compare, so the primary's report is not awaited.
func (p *Pair) shadowFailed() {
	p.state.Or(shadowDone | shadowOff)
	p.s.failed()
}

// drop counts a queued copy that Close dropped before it was sent.
func (p *Pair) drop() {
	p.state.Or(shadowDone | shadowOff)
	p.s.dropped()
}

func (p *Pair) verdict() {
	if p.sStatus == p.pStatus && p.sSum == p.pSum {
		p.s.matched()
	} else {
		p.s.mismatched()
	}
}
