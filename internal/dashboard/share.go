package dashboard

import (
	"reflect"
	"slices"
)

// share makes cur reuse prev's point of every deployment whose point has
// not changed since, and prev's latency bounds when they are the same.
// Samples are never changed once taken, so the history may hold one point
// in many samples: a deployment that sits idle costs each sample of the
// history a map entry instead of a copy of its point (with its maps,
// buckets and cost line, about 650 bytes). Without it, 1,000 deployments
// at zero held about 190 MB in the 300 samples of the history (what
// changes while a deployment is idle is kept out of its points: latest).
func share(prev, cur *sample) {
	if prev == nil {
		return
	}
	if slices.Equal(prev.Bounds, cur.Bounds) {
		cur.Bounds = prev.Bounds
	}
	for name, p := range cur.Deps {
		// DeepEqual rather than a comparison by hand: a field added to
		// point later cannot be left out (a NaN only stops the sharing).
		if q := prev.Deps[name]; q != nil && reflect.DeepEqual(p, q) {
			cur.Deps[name] = q
		}
	}
}
