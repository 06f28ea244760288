package cluster

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// Raft snapshots when the log holds SnapshotThreshold entries and keeps
// TrailingLogs entries after it: counts, which suit the small entries of
// key-at-a-time writes. An import of 10,000 keys is one entry of about
// 2 MB, so by count a node could gather gigabytes of log before its first
// snapshot, replay all of it on restart, send all of it to a new node
// instead of a snapshot, and keep much of it mapped in memory (bolt reads
// the log through mmap). snapshotBySize bounds the log by bytes as well:
// once the commands applied since the last snapshot reach SnapshotLogBytes,
// or the last snapshot's size if that is larger, it takes one, keeping
// about TrailingLogBytes of entries (never more than TrailingLogs, never
// fewer than minTrailingLogs) for followers that lag. Growing the trigger
// with the snapshot keeps a bulk load's snapshots geometric: loading 10M
// keys writes a few snapshots, not one per 64 MiB of an ever larger state.
const minTrailingLogs = 8

func (n *Node) snapshotBySize(snaps raft.SnapshotStore, every time.Duration) {
	n.every(every, func() bool {
		if err := n.snapshotLogOver(snapshotTrigger(n.cfg, lastSnapshotSize(snaps))); err != nil {
			n.log.Warn("snapshot by log size failed", "error", err)
		}
		return true
	})
}

// snapshotTrigger is how many bytes of log since the last snapshot call for
// a new one: SnapshotLogBytes or the last snapshot's size, whichever is larger.
func snapshotTrigger(cfg Config, lastSnapshot uint64) uint64 {
	return max(cfg.SnapshotLogBytes, lastSnapshot)
}

// lastSnapshotSize is the size in bytes of the newest snapshot, 0 if none.
func lastSnapshotSize(snaps raft.SnapshotStore) uint64 {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return 0
	}
	return uint64(list[0].Size)
}

// trailingFor is how many entries of avgSize bytes make TrailingLogBytes.
func trailingFor(cfg Config, avgSize uint64) uint64 {
	return min(cfg.TrailingLogs, max(minTrailingLogs, cfg.TrailingLogBytes/max(avgSize, 1)))
}

// snapshotForNewMember runs on the leader before it adds a member. When
// more than TrailingLogBytes of log came since the last snapshot, it takes
// one: the new node then installs a current snapshot and replays a few
// entries, instead of an older snapshot and up to a snapshot's worth of
// log after it (after a bulk import, most of a 1M-key catch-up).
func (n *Node) snapshotForNewMember() {
	if err := n.snapshotLogOver(n.cfg.TrailingLogBytes); err != nil {
		n.log.Warn("snapshot before adding a member failed", "error", err)
	}
}

// snapshotLogOver takes a snapshot keeping about TrailingLogBytes of log
// when at least threshold bytes of commands were applied since the last one.
func (n *Node) snapshotLogOver(threshold uint64) error {
	bytes, entries := n.fsm.Unsnapshotted()
	if entries == 0 || bytes < threshold {
		return nil
	}
	return n.snapshotKeeping(trailingFor(n.cfg, bytes/entries))
}

// snapshotKeeping takes a snapshot that truncates the log to its last
// trailing entries, then restores the configured count for raft's own
// snapshots (the trailing count is read when a snapshot truncates). Calls
// are serialised: one must not take the other's lowered count for the
// configured one.
func (n *Node) snapshotKeeping(trailing uint64) error {
	n.snapshotMu.Lock()
	defer n.snapshotMu.Unlock()
	rc := n.raft.ReloadableConfig()
	configured := rc.TrailingLogs
	rc.TrailingLogs = trailing
	if err := n.raft.ReloadConfig(rc); err != nil {
		return err
	}
	err := n.raft.Snapshot().Error()
	rc.TrailingLogs = configured
	if rerr := n.raft.ReloadConfig(rc); rerr != nil && err == nil {
		err = rerr
	}
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}
