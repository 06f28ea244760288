package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps recently stored log entries in memory, as raft.LogCache
// does, so the leader sends them to followers without reading bolt; but
// only entries of up to maxCachedEntry bytes. raft.LogCache keeps a fixed
// number whatever their size, and an import is one entry of about 2 MB:
// 16 of them held 32 MB of heap for as long as no smaller writes displaced
// them. Key-at-a-time writes, the ones whose latency matters, are far
// smaller (about 1 KB); a follower that needs a large entry reads it from
// bolt, which costs little next to sending 2 MB.
type logCache struct {
	raft.LogStore // FirstIndex, LastIndex

	mu   sync.RWMutex
	ring [logCacheEntries]*raft.Log // entry i at i % logCacheEntries
	// heads has the index, term and type of every entry stored, whatever
	// its size, at the same place: what the read index's scan asks of the
	// newest entries (an import's 2 MB are not read and decoded for it).
	heads [logCacheEntries]raft.Log
}

const (
	logCacheEntries = 128
	maxCachedEntry  = 64 << 10 // so the cache holds at most 8 MiB
)

func newLogCache(store raft.LogStore) *logCache { return &logCache{LogStore: store} }

func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.ring[idx%logCacheEntries]
	c.mu.RUnlock()
	if cached != nil && cached.Index == idx {
		*log = *cached
		return nil
	}
	return c.LogStore.GetLog(idx, log)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.heads[l.Index%logCacheEntries] = raft.Log{Index: l.Index, Term: l.Term, Type: l.Type}
		slot := &c.ring[l.Index%logCacheEntries]
		if len(l.Data)+len(l.Extensions) <= maxCachedEntry {
			*slot = l
		} else {
			*slot = nil // not an older entry either: it would be dead weight
		}
	}
	return nil
}

// DeleteRange forgets the cached entries in [min, max] (a compaction's old
// ones, or a tail that conflicts with the leader's) and keeps the rest:
// each slot holds one index, so the check is exact, and a compaction does
// not cost the newest entries their heads.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	for i := range c.heads {
		if idx := c.heads[i].Index; idx >= min && idx <= max {
			c.heads[i], c.ring[i] = raft.Log{}, nil
		}
	}
	c.mu.Unlock()
	return c.LogStore.DeleteRange(min, max)
}

// headsOnly reads entries without their data: from the heads of the
// latest entries, else from the store.
func (c *logCache) headsOnly() logReader { return logHeads{c} }

type logHeads struct{ c *logCache }

func (h logHeads) GetLog(idx uint64, l *raft.Log) error {
	h.c.mu.RLock()
	head := h.c.heads[idx%logCacheEntries]
	h.c.mu.RUnlock()
	if head.Index == idx && idx != 0 {
		*l = head
		return nil
	}
	return h.c.GetLog(idx, l)
}
