package api

import "testing"

// TestFreshnessAdvance: the node is fresh as of the newest probe whose read
// index it has applied; a probe it cannot reach (a deposed leader's index)
// does not hold back newer ones.
func TestFreshnessAdvance(t *testing.T) {
	cases := []struct {
		name        string
		pending     []probe
		applied     uint64
		wantFreshNs int64 // 0: unchanged
		wantLeft    int
	}{
		{"nothing pending", nil, 10, 0, 0},
		{"not caught up", []probe{{100, 11}, {200, 12}}, 10, 0, 2},
		{"caught up with the first", []probe{{100, 10}, {200, 12}}, 10, 100, 1},
		{"caught up with all", []probe{{100, 5}, {200, 9}}, 10, 200, 0},
		{"a stuck probe does not block newer ones", []probe{{100, 50}, {200, 9}, {300, 12}}, 10, 200, 1},
	}
	for _, c := range cases {
		var f freshness
		left := f.advance(c.pending, c.applied)
		if got := f.ns.Load(); got != c.wantFreshNs || len(left) != c.wantLeft {
			t.Errorf("%s: fresh as of %d with %d pending, want %d with %d", c.name, got, len(left), c.wantFreshNs, c.wantLeft)
		}
	}
}
