package keyindex

import (
	"slices"
	"sort"
)

// orderSet keeps the index's keys in the (workspace, id) order, for
// listings and snapshots: a sorted run of blocks, each a sorted array of
// at most orderBlockLen items (slot numbers, compared by their records).
//
// It replaced a B-tree (google/btree, degree 32), whose nodes split in half
// when full: keys arrive mostly in order (ids are ULIDs, a restore comes
// sorted, an import comes in batches), so every node behind the growing
// edge stayed half full, and with its node headers and child pointers the
// tree took 11 bytes a key in the Go heap (the largest part of a node's
// heap at a million keys). Here an item that falls after a full block
// starts a new one instead of splitting it, so keys added in order fill
// their blocks, and a key costs a little over 4 bytes. A block holds no
// pointer, so the collector does not scan it.
type orderSet struct {
	blocks  [][]orderItem // non-empty, each sorted and ordered after the one before
	compare func(a, b orderItem) int
}

// orderBlockLen is the capacity of a block: 2 KiB. Inserting into one moves
// up to that much; finding one costs a comparison (a record read) per
// halving of the blocks.
const orderBlockLen = 512

func newOrderSet(compare func(a, b orderItem) int) *orderSet {
	return &orderSet{compare: compare}
}

// search finds where it is or would go: the first block whose last item is
// not before it and the position of the first item there not before it;
// (len(s.blocks), 0) when every item is before it.
func (s *orderSet) search(it orderItem) (b, i int) {
	b = sort.Search(len(s.blocks), func(k int) bool {
		blk := s.blocks[k]
		return s.compare(blk[len(blk)-1], it) >= 0
	})
	if b == len(s.blocks) {
		return b, 0
	}
	blk := s.blocks[b]
	return b, sort.Search(len(blk), func(k int) bool { return s.compare(blk[k], it) >= 0 })
}

// insert adds it, or replaces the item equal to it.
func (s *orderSet) insert(it orderItem) {
	b, i := len(s.blocks), 0
	if b > 0 && s.compare(s.last(), it) >= 0 { // not after every item: look for its place
		b, i = s.search(it)
		if blk := s.blocks[b]; s.compare(blk[i], it) == 0 {
			blk[i] = it
			return
		}
	}
	// Between two blocks (or after the last): into the end of the one
	// before if it has room, else into a new block if the one after is
	// full. Either way no block is split, so items that arrive in order
	// fill their blocks.
	if i == 0 {
		switch {
		case b > 0 && len(s.blocks[b-1]) < orderBlockLen:
			b, i = b-1, len(s.blocks[b-1])
		case b == len(s.blocks) || len(s.blocks[b]) == orderBlockLen:
			blk := make([]orderItem, 1, orderBlockLen)
			blk[0] = it
			s.blocks = slices.Insert(s.blocks, b, blk)
			return
		}
	}
	blk := s.blocks[b]
	if len(blk) == orderBlockLen { // full, and it goes inside: split in half
		const half = orderBlockLen / 2
		right := append(make([]orderItem, 0, orderBlockLen), blk[half:]...)
		blk = blk[:half]
		s.blocks[b] = blk
		s.blocks = slices.Insert(s.blocks, b+1, right)
		if i > half {
			b, i, blk = b+1, i-half, right
		}
	}
	s.blocks[b] = slices.Insert(blk, i, it) // within the block's capacity
}

func (s *orderSet) last() orderItem {
	blk := s.blocks[len(s.blocks)-1]
	return blk[len(blk)-1]
}

// delete removes the item equal to it, if there is one. A block left empty
// goes; one left with few items is merged into a neighbour when both fit in
// half a block, so deletions do not leave the set mostly empty blocks.
func (s *orderSet) delete(it orderItem) {
	b, i := s.search(it)
	if b == len(s.blocks) || s.compare(s.blocks[b][i], it) != 0 {
		return
	}
	blk := slices.Delete(s.blocks[b], i, i+1)
	s.blocks[b] = blk
	switch {
	case len(blk) == 0:
		s.blocks = slices.Delete(s.blocks, b, b+1)
	case b > 0 && len(s.blocks[b-1])+len(blk) <= orderBlockLen/2:
		s.blocks[b-1] = append(s.blocks[b-1], blk...)
		s.blocks = slices.Delete(s.blocks, b, b+1)
	case b+1 < len(s.blocks) && len(blk)+len(s.blocks[b+1]) <= orderBlockLen/2:
		s.blocks[b] = append(blk, s.blocks[b+1]...)
		s.blocks = slices.Delete(s.blocks, b+1, b+2)
	}
}

// ascendFrom calls fn with every item from the first not before pivot
// on, in order, until fn returns false.
func (s *orderSet) ascendFrom(pivot orderItem, fn func(orderItem) bool) {
	b, i := s.search(pivot)
	s.ascendAt(b, i, fn)
}

// ascend calls fn with every item in order until fn returns false.
func (s *orderSet) ascend(fn func(orderItem) bool) { s.ascendAt(0, 0, fn) }

func (s *orderSet) ascendAt(b, i int, fn func(orderItem) bool) {
	for ; b < len(s.blocks); b, i = b+1, 0 {
		for _, it := range s.blocks[b][i:] {
			if !fn(it) {
				return
			}
		}
	}
}
