package cluster

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore counts the entries read from it.
type countingStore struct {
	*raft.InmemStore
	reads int
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.reads++
	return s.InmemStore.GetLog(idx, l)
}

func TestLogCacheKeepsSmallEntriesOnly(t *testing.T) {
	store := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(store)
	small := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Data: bytes.Repeat([]byte{byte(i)}, 100)}
	}
	big := &raft.Log{Index: 3, Term: 1, Data: make([]byte, maxCachedEntry+1)}
	if err := c.StoreLogs([]*raft.Log{small(1), small(2), big}); err != nil {
		t.Fatal(err)
	}
	read := func(i uint64, fromStore int) {
		t.Helper()
		before := store.reads
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Index != i || (i != 3 && !bytes.Equal(l.Data, small(i).Data)) || (i == 3 && len(l.Data) != len(big.Data)) {
			t.Fatalf("entry %d read back as %d (%d bytes)", i, l.Index, len(l.Data))
		}
		if got := store.reads - before; got != fromStore {
			t.Fatalf("entry %d: %d reads of the store, want %d", i, got, fromStore)
		}
	}
	read(1, 0)
	read(2, 0)
	read(3, 1) // too large to keep

	// An entry one ring further on takes the slot; the older one is read
	// from the store, not answered with the newer one.
	if err := c.StoreLog(small(1 + logCacheEntries)); err != nil {
		t.Fatal(err)
	}
	read(1, 1)
	read(1+logCacheEntries, 0)

	// A large entry empties its slot rather than leaving an older entry.
	if err := c.StoreLog(&raft.Log{Index: 2 + logCacheEntries, Term: 1, Data: make([]byte, maxCachedEntry+1)}); err != nil {
		t.Fatal(err)
	}
	if c.ring[2%logCacheEntries] != nil {
		t.Fatal("a large entry left an older one cached in its slot")
	}

	// Compaction forgets the entries it deletes, gone from both, and keeps
	// the later ones.
	if err := c.DeleteRange(1, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(1, new(raft.Log)); err != raft.ErrLogNotFound {
		t.Fatalf("entry 1 after DeleteRange: %v", err)
	}
	read(1+logCacheEntries, 0)
}

// TestLogCacheHeadsOnlyReadsNoStore: the read index's scan learns the
// term and type of the latest entries, an import's megabytes included,
// without reading the store, also after a compaction of older ones; an
// entry older than the ring comes from the store, a deleted one from
// nowhere.
func TestLogCacheHeadsOnlyReadsNoStore(t *testing.T) {
	store := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(store)
	var logs []*raft.Log
	for i := uint64(1); i <= logCacheEntries+2; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 2, Type: raft.LogNoop})
	}
	last := &raft.Log{Index: logCacheEntries + 3, Term: 3, Type: raft.LogCommand, Data: make([]byte, maxCachedEntry+1)}
	if err := c.StoreLogs(append(logs, last)); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := c.headsOnly().GetLog(last.Index, &l); err != nil || l.Index != last.Index || l.Term != 3 || l.Type != raft.LogCommand || l.Data != nil || store.reads != 0 {
		t.Fatalf("head of the big last entry: %+v (%v) after %d store reads", l, err, store.reads)
	}
	if err := c.headsOnly().GetLog(1, &l); err != nil || l.Index != 1 || store.reads != 1 {
		t.Fatalf("an entry older than the ring: %+v (%v) after %d store reads, want 1", l, err, store.reads)
	}
	// A compaction keeps the heads of the entries it does not delete; a
	// truncated tail loses its own.
	if err := c.DeleteRange(1, last.Index-1); err != nil {
		t.Fatal(err)
	}
	if err := c.headsOnly().GetLog(last.Index, &l); err != nil || l.Term != 3 || store.reads != 1 {
		t.Fatalf("after a compaction below it: %+v (%v), %d store reads, want 1", l, err, store.reads)
	}
	if err := c.StoreLogs([]*raft.Log{{Index: last.Index + 1, Term: 3, Type: raft.LogNoop}}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteRange(last.Index, last.Index+1); err != nil {
		t.Fatal(err)
	}
	if err := c.headsOnly().GetLog(last.Index, &l); err == nil || store.reads != 2 {
		t.Fatalf("a truncated entry: %+v (%v), %d store reads, want it gone from both", l, err, store.reads)
	}
}
