package cluster

import (
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// This file decides which Raft membership changes the leader makes, from one
// view of the Raft configuration and of gossip. It does no I/O, so every rule
// is tested against the exact views that go wrong in practice: above all a
// new leader whose gossip has not yet heard that a node was removed or died.
//
// The rule that keeps such a stale view harmless: a node is always added as a
// nonvoter, which does not count towards quorum, and becomes a voter only
// once it proves the leader reaches it: its gossip metadata shows a log index
// at least the leader's last index when the leader first saw it as a
// nonvoter, which is past the configuration entry that made it one (a node
// that died before that entry was written cannot show it), and it has stayed
// alive for promoteAfter since. A stale add of a dead or departing node
// therefore never makes the cluster wait for it, and once gossip sees it dead
// it is removed at once (a candidate that never voted needs no reaping delay).

type changeKind int

const (
	// addNonvoter adds a member as a nonvoter. For a server already in the
	// configuration it only updates the address (raft keeps its suffrage).
	addNonvoter changeKind = iota
	// promoteVoter makes a nonvoter that announces the voter role a voter.
	promoteVoter
	removeServer
	// tellRemoved resends an operator's removal to a node that still
	// gossips (sent once it is out of the configuration).
	tellRemoved
	// tellLeaveDone tells a node that asked to leave, and is out of the
	// configuration, that it may go (again, should a message be lost).
	tellLeaveDone
)

type membershipChange struct {
	kind   changeKind
	member Member // the gossip member, for adds and promotions
	id     string
	why    string // for removals, logged
	// leaveDone: a node that asked to leave is told once it is out (after
	// the removal succeeded, or right away for tellLeaveDone).
	leaveDone bool
}

// membershipView is what one reconciliation pass decides from.
type membershipView struct {
	self    string
	servers map[string]raft.Server // the Raft configuration, by id
	// lastIndex is the leader's last log index (raft.LastIndex): at or past
	// the entry of the configuration above. (raft v1.7's GetConfiguration
	// future reports index 0, so it cannot say where that entry is.)
	lastIndex    uint64
	members      []Member // gossip, as this node sees it
	now          time.Time
	reapAfter    time.Duration
	promoteAfter time.Duration
	// removed: an operator removed the node (fsm.OpNodeRemoved): it is
	// never added back.
	removed func(id string) bool
}

// reconciler is the leader's memory between passes.
type reconciler struct {
	missingSince map[string]time.Time // in the Raft configuration, unknown to gossip
	// candidates: nonvoters that want to vote, alive in every pass since
	// this leader first saw them so.
	candidates map[string]candidate
	// wakeAt asks for a pass at this time (a candidate becomes promotable);
	// zero when no pass is due before the periodic one.
	wakeAt   time.Time
	lastFull time.Time
	// leaderTerm is the term this node last led in, 0 while it does not:
	// by term, so that losing and winning leadership between two ticks
	// still starts afresh.
	leaderTerm uint64
}

func newReconciler() *reconciler {
	return &reconciler{missingSince: map[string]time.Time{}, candidates: map[string]candidate{}}
}

// tellRemovedEvery is how often a removed node still in the gossip ring
// is told again.
const tellRemovedEvery = time.Second

// wake asks for a pass at t at the latest.
func (rc *reconciler) wake(t time.Time) {
	if rc.wakeAt.IsZero() || t.Before(rc.wakeAt) {
		rc.wakeAt = t
	}
}

// forget drops the observations a promotion or reap waits on.
func (rc *reconciler) forget() {
	clear(rc.missingSince)
	clear(rc.candidates)
	rc.wakeAt = time.Time{}
}

// plan returns the changes to make, in order.
func (rc *reconciler) plan(v membershipView) []membershipChange {
	// Removals planned in this pass count in the quorum check of the next.
	servers := maps.Clone(v.servers)
	var out []membershipChange
	remove := func(id, why string, checkQuorum bool) (planned bool) {
		if checkQuorum && !canRemove(v.self, servers, v.members, id) {
			return false
		}
		out = append(out, membershipChange{kind: removeServer, id: id, why: why})
		delete(servers, id)
		return true
	}
	rc.wakeAt = time.Time{}
	alive := aliveIDs(v.self, v.members)
	// Operator removals first, whatever gossip says: a removed server still
	// in the configuration is one whose RemoveServer failed after the
	// removal committed, or that a stale view added back. That may be this
	// leader itself (elected before its removal went through): raft lets a
	// leader remove itself, and it steps down once that commits.
	for _, id := range slices.Sorted(maps.Keys(v.servers)) {
		if v.removed(id) {
			remove(id, "removed by an operator", true)
		}
	}
	seen := map[string]bool{}
	for _, m := range v.members {
		seen[m.ID] = true
		if m.ID == v.self {
			continue
		}
		s, inConfig := servers[m.ID]
		if m.State != GossipAlive || !inConfig || s.Suffrage != raft.Nonvoter {
			delete(rc.candidates, m.ID)
		}
		switch m.State {
		case GossipAlive:
			switch {
			case m.Removed || v.removed(m.ID):
				if inConfig {
					remove(m.ID, "removed by an operator", true)
				}
				// Also when it says it knows: it leaves elections and the
				// ring only once told it is out of the configuration. The
				// message may be lost (a node that just restarted), so it
				// is sent again every tellRemovedEvery while the node
				// stays in the ring, not only at the periodic pass.
				out = append(out, membershipChange{kind: tellRemoved, id: m.ID})
				rc.wake(v.now.Add(tellRemovedEvery))
			case m.Leaving:
				// It leaves the ring once told it is out of the
				// configuration; a removal that would cost the quorum is
				// refused, and the node stays a member.
				if !inConfig {
					out = append(out, membershipChange{kind: tellLeaveDone, id: m.ID})
				} else if remove(m.ID, "asked to leave", true) {
					out[len(out)-1].leaveDone = true
				}
			case !inConfig || string(s.Address) != m.RaftAddr:
				// Raft takes one server per address. One that another id
				// holds was most often the node's own past: restarted on a
				// new data dir, it has a new id. The old server goes first,
				// unless gossip says it is alive (then the two conflict,
				// and neither changes).
				if holder, taken := serverAt(servers, m.RaftAddr, m.ID); taken {
					if alive[holder] {
						continue
					}
					remove(holder, "its address now belongs to "+m.ID, true)
					if _, still := servers[holder]; still {
						continue // not without losing quorum
					}
				}
				out = append(out, membershipChange{kind: addNonvoter, member: m, id: m.ID})
			case s.Suffrage == raft.Nonvoter && m.Role == RoleVoter:
				if c, ok := rc.promotion(m, v); ok {
					out = append(out, c)
				}
			}
		case GossipLeft:
			// It asked to go: no quorum check (without quorum the removal
			// cannot commit anyway, and is retried).
			if inConfig {
				remove(m.ID, "left the gossip ring", false)
			}
		case GossipDead:
			switch {
			case !inConfig:
			case s.Suffrage == raft.Nonvoter && m.Role == RoleVoter:
				// A candidate that died before it was promoted, or that a
				// stale view added back: it never voted in this
				// configuration, and a nonvoter's removal needs no quorum.
				remove(m.ID, "died before its promotion", false)
			case v.now.Sub(m.Since) >= v.reapAfter:
				remove(m.ID, "dead longer than --reap-after", true)
			}
		}
	}
	// Servers gossip no longer knows at all (forgotten dead nodes, or
	// never seen since this leader started) are reaped the same way.
	for id := range v.servers {
		if seen[id] || id == v.self {
			delete(rc.missingSince, id)
			continue
		}
		since, ok := rc.missingSince[id]
		if !ok {
			rc.missingSince[id] = v.now
			continue
		}
		if v.now.Sub(since) >= v.reapAfter {
			before := len(out)
			remove(id, "unknown to gossip longer than --reap-after", true)
			if len(out) > before {
				delete(rc.missingSince, id)
			}
		}
	}
	return out
}

// serverAt returns the server other than id at addr, if any.
func serverAt(servers map[string]raft.Server, addr, id string) (string, bool) {
	for sid, s := range servers {
		if string(s.Address) == addr && sid != id {
			return sid, true
		}
	}
	return "", false
}

// candidate is what a leader noted when it first saw a nonvoter that wants
// to vote: when, and its own last log index then, which the candidate must
// reach.
type candidate struct {
	since time.Time
	index uint64
}

// promotion returns the promotion of candidate m once it has been alive and
// a nonvoter for promoteAfter, as seen by this leader, and has reached the
// index noted then; until the time is up it asks for a pass when it will be.
// (The candidate is kept after a promotion is planned: should AddVoter fail,
// the next pass tries again at once; once it is a voter the entry goes.)
func (rc *reconciler) promotion(m Member, v membershipView) (membershipChange, bool) {
	c, ok := rc.candidates[m.ID]
	if !ok {
		c = candidate{since: v.now, index: v.lastIndex}
		rc.candidates[m.ID] = c
	}
	// Gossip's own alive-since counts too: a node that died and came back
	// between two passes starts over.
	start := c.since
	if m.Since.After(start) {
		start = m.Since
	}
	due := start.Add(v.promoteAfter)
	if v.now.Before(due) {
		rc.wake(due)
		return membershipChange{}, false
	}
	if m.Index < c.index {
		// Not caught up with what the leader had when it saw it (or not
		// reached at all): its next announcement triggers a pass.
		return membershipChange{}, false
	}
	return membershipChange{kind: promoteVoter, member: m, id: m.ID}, true
}

// canRemove reports whether removing server id keeps a working quorum: the
// voters that are alive must be a majority of the current configuration
// (so the change can commit), and those left alive after it a majority of
// the configuration after it (removing a live voter takes its vote away).
func canRemove(self string, servers map[string]raft.Server, members []Member, id string) bool {
	alive := aliveIDs(self, members)
	voters, aliveVoters := 0, 0
	for sid, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if alive[sid] {
			aliveVoters++
		}
	}
	after, aliveAfter := voters, aliveVoters
	if s, ok := servers[id]; ok && s.Suffrage == raft.Voter {
		after--
		if alive[id] {
			aliveAfter--
		}
	}
	return aliveVoters >= voters/2+1 && aliveAfter >= after/2+1 && after >= 1
}

// aliveIDs is the set of members gossip sees alive, self included.
func aliveIDs(self string, members []Member) map[string]bool {
	alive := map[string]bool{self: true}
	for _, m := range members {
		if m.State == GossipAlive {
			alive[m.ID] = true
		}
	}
	return alive
}
