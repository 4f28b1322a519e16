package pool

import (
	"context"
	"testing"
)

// With a floor target, requests fill the floor instances up to it first,
// and only the overflow goes to burst instances; without one, the least
// busy instance takes each request.
func TestPool_FloorFirst(t *testing.T) {
	for _, tc := range []struct {
		name        string
		floorTarget int64
		wantFloor   int // of 4 requests, on the floor instance
	}{
		{"hybrid target 2", 2, 2},
		{"hybrid target 3", 3, 3},
		{"no tiers", 0, 2}, // least busy: the two instances alternate
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Config{Name: "m", MaxQueue: 10, FloorTarget: tc.floorTarget})
			floor, burst := NewInstance("floor", "x"), NewInstance("burst", "y")
			floor.SetFloor(true)
			p.Add(burst) // first in the snapshot, so order alone would favour it
			p.Add(floor)
			var leases []*Lease
			for range 4 {
				l, err := p.Acquire(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				leases = append(leases, l)
			}
			if got := floor.InFlight(); got != tc.wantFloor {
				t.Errorf("floor in flight %d, burst %d; want %d on the floor", got, burst.InFlight(), tc.wantFloor)
			}
			for _, l := range leases {
				l.Release()
			}
			// Released: the next request goes to the floor again.
			if tc.floorTarget > 0 {
				l, _ := p.Acquire(context.Background())
				if l.Instance != floor {
					t.Errorf("after release the request went to %s, want the floor", l.Instance.ID)
				}
				l.Release()
			}
		})
	}
}
