package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/keyraft/keyraft/fsm"
)

func appendLogs(t *testing.T, s raft.LogStore, term uint64, types ...raft.LogType) {
	t.Helper()
	last, _ := s.LastIndex()
	for i, typ := range types {
		if err := s.StoreLog(&raft.Log{Index: last + uint64(i) + 1, Term: term, Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
}

func noFallback(t *testing.T) func() uint64 {
	return func() uint64 { t.Fatal("fell back with the log intact"); return 0 }
}

// TestFSMTailSkipsEntriesTheFSMNeverSees: a read index names the newest
// command or configuration change, never a no-op or barrier after it.
func TestFSMTailSkipsEntriesTheFSMNeverSees(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	appendLogs(t, s, 1, raft.LogConfiguration, raft.LogNoop)
	var tail fsmTail
	if got := tail.newestVisible(s, 2, noFallback(t)); got != 1 {
		t.Fatalf("after a bootstrap and a no-op: %d, want the configuration's 1", got)
	}
	appendLogs(t, s, 1, raft.LogCommand, raft.LogBarrier, raft.LogBarrier)
	if got := tail.newestVisible(s, 5, noFallback(t)); got != 3 {
		t.Fatalf("barriers after a command: %d, want 3", got)
	}
	appendLogs(t, s, 1, raft.LogBarrier)
	s.reads = 0
	if got := tail.newestVisible(s, 6, noFallback(t)); got != 3 || s.reads != 2 {
		t.Fatalf("one more barrier: %d after %d reads, want 3 after 2 (the new entry and the memo's)", got, s.reads)
	}
	appendLogs(t, s, 1, raft.LogCommand)
	if got := tail.newestVisible(s, 7, noFallback(t)); got != 7 {
		t.Fatalf("a command last: %d, want 7", got)
	}
}

// TestFSMTailMemoFollowsARewrittenLog: when the entries after a command
// are replaced by a later term's, the memo of the old tail is not used.
func TestFSMTailMemoFollowsARewrittenLog(t *testing.T) {
	s := raft.NewInmemStore()
	appendLogs(t, s, 1, raft.LogCommand, raft.LogCommand, raft.LogNoop, raft.LogBarrier)
	var tail fsmTail
	if got := tail.newestVisible(s, 4, noFallback(t)); got != 2 {
		t.Fatalf("term 1: %d, want 2", got)
	}
	if err := s.DeleteRange(3, 4); err != nil {
		t.Fatal(err)
	}
	appendLogs(t, s, 2, raft.LogCommand, raft.LogNoop)
	if got := tail.newestVisible(s, 4, noFallback(t)); got != 3 {
		t.Fatalf("term 2 rewrote 3 and 4: %d, want the new command at 3", got)
	}
}

// TestFSMTailCompactedLog: with nothing visible left in the log, the FSM's
// own applied index (which holds the snapshot) is the answer.
func TestFSMTailCompactedLog(t *testing.T) {
	s := raft.NewInmemStore()
	for i, typ := range []raft.LogType{raft.LogNoop, raft.LogBarrier} {
		if err := s.StoreLog(&raft.Log{Index: uint64(10 + i), Term: 3, Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	var tail fsmTail
	if got := tail.newestVisible(s, 11, func() uint64 { return 8 }); got != 8 {
		t.Fatalf("compacted below 10: %d, want the FSM's 8", got)
	}
}

// TestReadIndexAfterRestartIsReached: a restarted single node leads with a
// no-op as its last entry; its read index must still be one its FSM
// reaches, or --max-stale would keep it stale until the next write.
func TestReadIndexAfterRestartIsReached(t *testing.T) {
	cfg := singleNodeConfig(t)
	n := openLeader(t, cfg)
	if _, _, err := n.Apply(&fsm.Command{Op: fsm.OpPurgeRotations}); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	n = openLeader(t, cfg)
	defer n.Shutdown()
	idx, err := n.ReadIndex(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var last raft.Log
	if err := n.logs.GetLog(n.raft.LastIndex(), &last); err != nil || last.Type != raft.LogNoop {
		t.Fatalf("the restarted leader's last entry is %v (%v), not its no-op: the test sets up nothing", last.Type, err)
	}
	if !n.WaitApplied(idx, 5*time.Second) {
		t.Fatalf("read index %d never applied (FSM at %d, log at %d)", idx, n.FSM().AppliedIndex(), n.raft.LastIndex())
	}
}

// TestCaughtUpAsLeaderOncePerTerm: a leader runs one barrier per term
// before it serves admin requests (so its state holds every write an
// earlier leader acknowledged), and none after that in the same term.
func TestCaughtUpAsLeaderOncePerTerm(t *testing.T) {
	cfg := singleNodeConfig(t)
	var cmdIndex uint64
	for term := 0; term < 2; term++ { // the second term: after a restart
		n := openLeader(t, cfg)
		if term == 0 {
			var err error
			if _, cmdIndex, err = n.Apply(&fsm.Command{Op: fsm.OpPurgeRotations}); err != nil {
				t.Fatal(err)
			}
		}
		// Right after a restart the new term's no-op may land after this
		// read: the barrier is then the second entry.
		before := n.raft.LastIndex()
		var after uint64
		for call := 0; call < 3; call++ {
			if err := n.CaughtUpAsLeader(); err != nil {
				t.Fatal(err)
			}
			got := n.raft.LastIndex()
			if call == 0 {
				after = got
			}
			if got != after || got == before || (term == 0 && got != before+1) {
				t.Fatalf("term %d, call %d: log at %d (%d after the first call), want one barrier after %d", term, call, got, after, before)
			}
			if n.FSM().AppliedIndex() < cmdIndex {
				t.Fatalf("term %d: caught up with the FSM at %d, below the command at %d", term, n.FSM().AppliedIndex(), cmdIndex)
			}
		}
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadIndexWaitsForARestore: while a restore is being confirmed the
// leader's log ends in the gap raft leaves for the snapshot, and no index
// in it is one only nodes holding the backup reach: no read index is given.
func TestReadIndexWaitsForARestore(t *testing.T) {
	n := openLeader(t, singleNodeConfig(t))
	defer n.Shutdown()
	if _, err := n.ReadIndex(time.Second); err != nil {
		t.Fatalf("a leader refused a read index: %v", err)
	}
	n.restoring.Add(1)
	if _, err := n.ReadIndex(time.Second); err == nil {
		t.Fatal("a read index was given during a restore")
	}
	n.restoring.Add(-1)
	if _, err := n.ReadIndex(time.Second); err != nil {
		t.Fatalf("after the restore: %v", err)
	}
}
