package keyindex

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkOrderSet fails unless s holds exactly want (sorted) in blocks that
// are non-empty, sorted, of the fixed capacity, and each after the last.
func checkOrderSet(t *testing.T, s *orderSet, want []orderItem) {
	t.Helper()
	var got []orderItem
	for b, blk := range s.blocks {
		if len(blk) == 0 || cap(blk) != orderBlockLen {
			t.Fatalf("block %d: %d items, capacity %d", b, len(blk), cap(blk))
		}
		got = append(got, blk...)
	}
	if !slices.IsSorted(got) || !slices.Equal(got, want) {
		t.Fatalf("the set holds %d items, sorted %v; want %d", len(got), slices.IsSorted(got), len(want))
	}
}

// TestOrderSetAgainstSortedSlice: random inserts (new and repeated) and
// deletes (present and absent) keep the set equal to a sorted slice, and
// ascending from any pivot yields the items from it on.
func TestOrderSetAgainstSortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newOrderSet(cmp.Compare[orderItem])
	var want []orderItem
	for step := range 60_000 {
		it := orderItem(rng.IntN(5_000))
		i, found := slices.BinarySearch(want, it)
		// Insert more than delete at first, then the reverse, so the set
		// grows to thousands of items and shrinks back, merging blocks.
		if rng.IntN(60_000) > step {
			s.insert(it)
			if !found {
				want = slices.Insert(want, i, it)
			}
		} else {
			s.delete(it)
			if found {
				want = slices.Delete(want, i, i+1)
			}
		}
		if step%1000 == 0 {
			checkOrderSet(t, s, want)
			pivot := orderItem(rng.IntN(5_001))
			var from []orderItem
			s.ascendFrom(pivot, func(it orderItem) bool { from = append(from, it); return true })
			k, _ := slices.BinarySearch(want, pivot)
			if !slices.Equal(from, want[k:]) {
				t.Fatalf("step %d: from %d got %d items, want %d", step, pivot, len(from), len(want)-k)
			}
		}
	}
	checkOrderSet(t, s, want)
}

// TestOrderSetFillsBlocksInOrder: items that arrive in ascending order,
// whether after every item or between two runs already there (a workspace
// growing before the next one), fill their blocks instead of leaving them
// half empty as splitting in half does; ascend stops when asked.
func TestOrderSetFillsBlocksInOrder(t *testing.T) {
	s := newOrderSet(cmp.Compare[orderItem])
	var want []orderItem
	for i := range 20 * orderBlockLen { // the later workspace first: 1_000_000…
		it := orderItem(1_000_000 + i)
		s.insert(it)
		want = append(want, it)
	}
	for i := range 20 * orderBlockLen { // then an earlier one grows: 0…
		it := orderItem(i)
		s.insert(it)
		want = append(want, it)
	}
	slices.Sort(want)
	checkOrderSet(t, s, want)
	if len(s.blocks) > 40+1 {
		t.Errorf("%d items in order took %d blocks of %d, want at most 41", len(want), len(s.blocks), orderBlockLen)
	}
	n := 0
	s.ascend(func(orderItem) bool { n++; return n < 10 })
	if n != 10 {
		t.Errorf("ascend went on for %d items after fn returned false at 10", n)
	}
}
