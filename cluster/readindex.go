package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// fsmTail answers, for a log index, the newest entry at or below it that
// reaches the FSM. A read index must be one: the FSM's applied index only
// moves on commands and configuration changes (raft hands it nothing else),
// so a read index naming the no-op a new leader appends, or a barrier of a
// consistent read, would never be reached by any node while no write
// follows, and --max-stale would call a healthy node stale for as long.
// Entries the FSM never sees change no state, so a node that has applied
// the newest visible entry has applied everything up to the index.
//
// It remembers its last answer, so each call reads only the entries
// appended since (usually one: the log's last entry is most often a
// command). The memo is checked by term: two logs with an entry of the same
// index and term agree up to it (Raft's Log Matching), so an answer stays
// right across a truncated and rewritten tail only if the entry it was
// scanned to is still there.
type fsmTail struct {
	mu          sync.Mutex
	scanned     uint64 // the index the memo was computed for
	scannedTerm uint64 // that entry's term
	visible     uint64 // newest FSM-visible index ≤ scanned
}

// reachesFSM reports whether raft hands entries of type t to the FSM
// (a raft.BatchingFSM gets configuration changes as well as commands).
func reachesFSM(t raft.LogType) bool {
	return t == raft.LogCommand || t == raft.LogConfiguration
}

// logReader reads log entries; newestVisible needs their index, term and
// type only (logCache.headsOnly).
type logReader interface {
	GetLog(idx uint64, l *raft.Log) error
}

// newestVisible returns the newest FSM-visible index ≤ last in logs.
// When the walk reaches entries compacted into a snapshot, fallback — the
// index this node's FSM has applied — is the answer: every visible entry
// below the first retained one is in the snapshot this FSM holds, and a
// leader's FSM applies only committed entries, so it is not beyond last.
func (t *fsmTail) newestVisible(logs logReader, last uint64, fallback func() uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var l raft.Log
	var lastTerm uint64
	for i := last; i > 0; i-- {
		if err := logs.GetLog(i, &l); err != nil {
			return fallback()
		}
		if i == last {
			lastTerm = l.Term
		}
		switch {
		case reachesFSM(l.Type):
			t.scanned, t.scannedTerm, t.visible = last, lastTerm, i
			return i
		case i == t.scanned && l.Term == t.scannedTerm:
			t.scanned, t.scannedTerm = last, lastTerm
			return t.visible
		}
	}
	return 0
}
