package fsm

import (
	"sync"
	"time"
)

// AuditEntry records one admin write. It is part of the replicated state, so
// every node answers GET /v1/audit the same way.
type AuditEntry struct {
	Seq         uint64    `json:"seq"` // the Raft index of the write
	Time        time.Time `json:"time"`
	ActorKeyID  string    `json:"actor_key_id"`
	WorkspaceID string    `json:"workspace_id"` // workspace of the target key
	Action      string    `json:"action"`
	Target      string    `json:"target"` // key id, or "n keys" for imports
	RequestID   string    `json:"request_id"`
}

// AuditCapacity bounds the audit log: the oldest entries are dropped first,
// so memory and snapshots stay bounded however long the cluster runs.
const AuditCapacity = 100_000

// auditLog is a ring of the newest AuditCapacity entries in Seq order.
type auditLog struct {
	mu      sync.RWMutex
	entries []AuditEntry
	start   int // index of the oldest entry once the ring is full
}

// add appends e; when the ring is full it returns the entry it dropped.
func (a *auditLog) add(e AuditEntry) (evicted AuditEntry, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.entries) < AuditCapacity {
		a.entries = append(a.entries, e)
		return AuditEntry{}, false
	}
	evicted = a.entries[a.start]
	a.entries[a.start] = e
	a.start = (a.start + 1) % AuditCapacity
	return evicted, true
}

// all returns the entries oldest first.
func (a *auditLog) all() []AuditEntry {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]AuditEntry, 0, len(a.entries))
	out = append(out, a.entries[a.start:]...)
	return append(out, a.entries[:a.start]...)
}

func (a *auditLog) reset(entries []AuditEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries, a.start = entries, 0
}

// AuditQuery selects a page of the audit log, newest first.
type AuditQuery struct {
	WorkspaceID string // "" = every workspace
	Before      uint64 // only entries with Seq < Before; 0 = from the newest
	Limit       int
}

// page returns up to q.Limit matching entries, newest first, and the Before
// value of the next page (0 when there is none).
func (a *auditLog) page(q AuditQuery) ([]AuditEntry, uint64) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	out := []AuditEntry{}
	n := len(a.entries)
	for i := n - 1; i >= 0; i-- {
		e := a.entries[(a.start+i)%n]
		if q.Before != 0 && e.Seq >= q.Before {
			continue
		}
		if q.WorkspaceID != "" && e.WorkspaceID != q.WorkspaceID {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].Seq
		}
		out = append(out, e)
	}
	return out, 0
}
