package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func voter(id string) raft.Server {
	return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":raft"), Suffrage: raft.Voter}
}

func nonvoter(id string) raft.Server {
	return raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":raft"), Suffrage: raft.Nonvoter}
}

func config(ss ...raft.Server) map[string]raft.Server {
	m := map[string]raft.Server{}
	for _, s := range ss {
		m[string(s.ID)] = s
	}
	return m
}

// gossiping is a member in the given state since the given time, announcing
// the voter role and a log index past the configuration's (planView).
func gossiping(id, state string, since time.Time) Member {
	return Member{ID: id, RaftAddr: id + ":raft", Role: RoleVoter, HasState: true, Index: 100, State: state, Since: since}
}

// planView is a view from leader "a" with a 2 s reap and a 4 s promotion,
// whose last log index is 50.
func planView(now time.Time, servers map[string]raft.Server, members ...Member) membershipView {
	return membershipView{
		self: "a", servers: servers, lastIndex: 50,
		members: append([]Member{gossiping("a", GossipAlive, now.Add(-time.Hour))}, members...),
		now:     now, reapAfter: 2 * time.Second, promoteAfter: 4 * time.Second,
		removed: func(string) bool { return false },
	}
}

func describe(cs []membershipChange) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s %s", [...]string{"add-nonvoter", "promote", "remove", "tell-removed", "tell-leave-done"}[c.kind], c.id))
	}
	return out
}

func expectPlan(t *testing.T, what string, got []membershipChange, want ...string) {
	t.Helper()
	if g := describe(got); !slices.Equal(g, append([]string{}, want...)) {
		t.Errorf("%s: plan %v, want %v", what, g, want)
	}
}

func TestPlanAddsAsNonvoterAndPromotesAfterProbation(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	servers := config(voter("a"), voter("b"))
	expectPlan(t, "a new voter-role member", rc.plan(planView(t0, servers, gossiping("c", GossipAlive, t0))), "add-nonvoter c")

	servers = config(voter("a"), voter("b"), nonvoter("c"))
	behind := gossiping("c", GossipAlive, t0)
	behind.Index = 49 // behind the leader's last index when first seen
	expectPlan(t, "a candidate seen first", rc.plan(planView(t0.Add(2*time.Second), servers, behind)))
	if want := t0.Add(6 * time.Second); !rc.wakeAt.Equal(want) {
		t.Errorf("wakeAt %v, want %v (when the probation ends)", rc.wakeAt, want)
	}
	expectPlan(t, "before the probation ends", rc.plan(planView(t0.Add(5*time.Second), servers, gossiping("c", GossipAlive, t0))))
	expectPlan(t, "after it, but behind the configuration", rc.plan(planView(t0.Add(6*time.Second), servers, behind)))
	if !rc.wakeAt.IsZero() {
		t.Errorf("wakeAt %v: a candidate that is only behind waits for its announcement, not a timer", rc.wakeAt)
	}
	// The bar is the leader's last index when it first saw the candidate
	// (50), not the index now: a busy leader's log does not outrun it.
	later := planView(t0.Add(7*time.Second), servers, gossiping("c", GossipAlive, t0))
	later.lastIndex, later.members[1].Index = 80, 60
	expectPlan(t, "after it, caught up", rc.plan(later), "promote c")
	expectPlan(t, "AddVoter failed: the next pass tries again", rc.plan(planView(t0.Add(8*time.Second), servers, gossiping("c", GossipAlive, t0))), "promote c")
	promoted := config(voter("a"), voter("b"), voter("c"))
	b := gossiping("b", GossipAlive, t0)
	expectPlan(t, "promoted", rc.plan(planView(t0.Add(9*time.Second), promoted, b, gossiping("c", GossipAlive, t0))))
	if _, ok := rc.candidates["c"]; ok {
		t.Error("a voter is still a candidate")
	}
}

func TestPlanNeverPromotesAReplica(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	replica := gossiping("r", GossipAlive, t0)
	replica.Role = RoleNonvoter
	servers := config(voter("a"), voter("b"), nonvoter("r"))
	for _, at := range []time.Duration{0, time.Minute, time.Hour} {
		expectPlan(t, fmt.Sprintf("--nonvoter member at %v", at), rc.plan(planView(t0.Add(at), servers, replica)))
	}
	// A dead replica is reaped like a voter, after --reap-after.
	dead := replica
	dead.State, dead.Since = GossipDead, t0.Add(time.Hour)
	b := gossiping("b", GossipAlive, t0)
	expectPlan(t, "dead replica, 1 s", rc.plan(planView(t0.Add(time.Hour+time.Second), servers, b, dead)))
	expectPlan(t, "dead replica, 2 s", rc.plan(planView(t0.Add(time.Hour+2*time.Second), servers, b, dead)), "remove r")
}

func TestPlanProbationRestartsWhenTheCandidateFlaps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	servers := config(voter("a"), voter("b"), nonvoter("c"))
	c := func(state string) Member { return gossiping("c", state, t0) }
	// Dead and back between two passes: only gossip's alive-since shows it.
	back := gossiping("c", GossipAlive, t0.Add(3*time.Second))
	expectPlan(t, "seen at 0", rc.plan(planView(t0, servers, c(GossipAlive))))
	expectPlan(t, "back since 3 s, at 4 s", rc.plan(planView(t0.Add(4*time.Second), servers, back)))
	expectPlan(t, "back since 3 s, at 6 s", rc.plan(planView(t0.Add(6*time.Second), servers, back)))
	expectPlan(t, "back since 3 s, at 7 s", rc.plan(planView(t0.Add(7*time.Second), servers, back)), "promote c")
}

// The race CI once hit: leader a reaps dead voter d; leadership moves to b,
// whose gossip still shows d alive. b used to AddVoter d, leaving voters
// {b, d} after a's removal: no quorum. Now d comes back as a nonvoter, which
// no quorum waits on; its announced index is from before it died, so it is
// never promoted however long the stale view lasts; and once gossip sees it
// dead it is removed at once.
func TestPlanStaleViewOfAReapedNodeNeverCostsQuorum(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	servers := config(voter("a"), voter("b"))
	b := gossiping("b", GossipAlive, t0.Add(-time.Minute))
	stale := gossiping("d", GossipAlive, t0.Add(-time.Minute))
	stale.Index = 40 // announced before it died, before the configuration that re-adds it
	expectPlan(t, "stale alive d", rc.plan(planView(t0, servers, b, stale)), "add-nonvoter d")

	servers = config(voter("a"), voter("b"), nonvoter("d"))
	for _, at := range []time.Duration{time.Second, 5 * time.Second, time.Minute} {
		expectPlan(t, fmt.Sprintf("stale view at %v", at), rc.plan(planView(t0.Add(at), servers, b, stale)))
	}
	dead := stale
	dead.State, dead.Since = GossipDead, t0.Add(time.Minute)
	expectPlan(t, "d seen dead", rc.plan(planView(t0.Add(time.Minute), servers, b, dead)), "remove d")
	if _, ok := rc.candidates["d"]; ok {
		t.Error("a dead candidate keeps its probation")
	}
}

// A new leader forgets what an earlier term observed.
func TestPlanForgetStartsProbationAgain(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	servers := config(voter("a"), voter("b"), nonvoter("c"))
	expectPlan(t, "seen", rc.plan(planView(t0, servers, gossiping("c", GossipAlive, t0))))
	rc.forget()
	expectPlan(t, "after forget, 4 s", rc.plan(planView(t0.Add(4*time.Second), servers, gossiping("c", GossipAlive, t0))))
	expectPlan(t, "after forget, 8 s", rc.plan(planView(t0.Add(8*time.Second), servers, gossiping("c", GossipAlive, t0))), "promote c")
}

func TestPlanRemovedByAnotherLeader(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	removed := gossiping("v", GossipAlive, t0.Add(-time.Minute))
	removed.Removed = true
	// Still gossiping: told (once out of the configuration: Node.reconcile)
	// that it may leave elections and the ring.
	expectPlan(t, "not in the configuration", rc.plan(planView(t0, config(voter("a"), voter("b")), removed)), "tell-removed v")
	expectPlan(t, "added back from a stale view", rc.plan(planView(t0, config(voter("a"), voter("b"), nonvoter("v")), gossiping("b", GossipAlive, t0), removed)), "remove v", "tell-removed v")

}

// TestPlanKeepsOperatorRemovalsOut: a removal committed to the state
// (fsm.OpNodeRemoved) holds on every leader: a removed server still in the
// configuration goes whatever gossip says of it (within quorum), a removed
// node is never added back, and one that still gossips is told again,
// whether it says it knows or not: it leaves elections and the ring only
// once told it is out of the configuration.
func TestPlanKeepsOperatorRemovalsOut(t *testing.T) {
	t0 := time.Unix(1000, 0)
	removedIDs := func(ids ...string) func(string) bool {
		return func(id string) bool { return slices.Contains(ids, id) }
	}
	view := func(servers map[string]raft.Server, removed []string, members ...Member) membershipView {
		v := planView(t0, servers, members...)
		v.removed = removedIDs(removed...)
		return v
	}
	b := gossiping("b", GossipAlive, t0)
	unaware := gossiping("v", GossipAlive, t0)
	aware := unaware
	aware.Removed = true
	expectPlan(t, "alive and unaware, not in the configuration", newReconciler().plan(view(config(voter("a"), voter("b")), []string{"v"}, b, unaware)), "tell-removed v")
	expectPlan(t, "alive and aware", newReconciler().plan(view(config(voter("a"), voter("b")), []string{"v"}, b, aware)), "tell-removed v")
	expectPlan(t, "still in the configuration, alive", newReconciler().plan(view(config(voter("a"), voter("b"), voter("v")), []string{"v"}, b, unaware)),
		"remove v", "tell-removed v")
	expectPlan(t, "still in the configuration, dead or unknown", newReconciler().plan(view(config(voter("a"), voter("b"), voter("c"), voter("v"), voter("w")),
		[]string{"w", "v"}, b, gossiping("c", GossipAlive, t0), gossiping("v", GossipDead, t0))), "remove v", "remove w")
	expectPlan(t, "the leader itself", newReconciler().plan(view(config(voter("a"), voter("b"), voter("c")), []string{"a"},
		b, gossiping("c", GossipAlive, t0))), "remove a")
	expectPlan(t, "its removal would cost the quorum", newReconciler().plan(view(config(voter("a"), voter("b"), voter("v")), []string{"v"},
		gossiping("b", GossipDead, t0), unaware)), "tell-removed v")
	// A tell may be lost: the leader passes again soon while the node is
	// in the ring, and not for a removed node that is gone.
	rc := newReconciler()
	rc.plan(view(config(voter("a"), voter("b")), []string{"v"}, b, unaware))
	if want := t0.Add(tellRemovedEvery); rc.wakeAt != want {
		t.Errorf("after telling a removed node: next pass at %v, want %v", rc.wakeAt, want)
	}
	rc.plan(view(config(voter("a"), voter("b")), []string{"v"}, b, gossiping("v", GossipLeft, t0)))
	if !rc.wakeAt.IsZero() {
		t.Errorf("a removed node that left: a pass asked for at %v", rc.wakeAt)
	}
}

func TestPlanReapsWithinQuorum(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rc := newReconciler()
	long := t0.Add(-time.Minute)
	five := config(voter("a"), voter("b"), voter("c"), voter("d"), voter("e"))
	// Two dead of five: each removal alone keeps quorum; both together also
	// do (3 alive of 3). Three dead: the alive 2 are not a majority of 5.
	expectPlan(t, "two dead of five", rc.plan(planView(t0, five, gossiping("b", GossipAlive, long), gossiping("c", GossipAlive, long),
		gossiping("d", GossipDead, long), gossiping("e", GossipDead, long))), "remove d", "remove e")
	expectPlan(t, "three dead of five", rc.plan(planView(t0, five, gossiping("b", GossipAlive, long),
		gossiping("c", GossipDead, long), gossiping("d", GossipDead, long), gossiping("e", GossipDead, long))))
	expectPlan(t, "dead but not for --reap-after", rc.plan(planView(t0, five, gossiping("b", GossipAlive, long), gossiping("c", GossipAlive, long),
		gossiping("d", GossipDead, t0.Add(-time.Second)))))
	expectPlan(t, "left: removed at once", rc.plan(planView(t0, config(voter("a"), voter("b"), voter("c")), gossiping("b", GossipAlive, long),
		gossiping("c", GossipLeft, t0))), "remove c")

	// Unknown to gossip: first noted, removed once --reap-after has passed.
	three := config(voter("a"), voter("b"), voter("x"))
	expectPlan(t, "unknown, first seen", rc.plan(planView(t0, three, gossiping("b", GossipAlive, long))))
	expectPlan(t, "unknown, 1 s", rc.plan(planView(t0.Add(time.Second), three, gossiping("b", GossipAlive, long))))
	expectPlan(t, "unknown, 2 s", rc.plan(planView(t0.Add(2*time.Second), three, gossiping("b", GossipAlive, long))), "remove x")
}

func TestPlanUpdatesAMovedServersAddress(t *testing.T) {
	t0 := time.Unix(1000, 0)
	moved := gossiping("b", GossipAlive, t0)
	moved.RaftAddr = "b:new"
	plan := newReconciler().plan(planView(t0, config(voter("a"), voter("b")), moved))
	// AddNonvoter on a voter only changes its address (raft keeps the suffrage).
	expectPlan(t, "moved voter", plan, "add-nonvoter b")
	if plan[0].member.RaftAddr != "b:new" {
		t.Errorf("address %q", plan[0].member.RaftAddr)
	}
}

func TestCanRemoveKeepsQuorum(t *testing.T) {

	alive := func(ids ...string) []Member {
		var out []Member
		for _, id := range ids {
			out = append(out, Member{ID: id, State: GossipAlive})
		}
		return out
	}
	cases := []struct {
		name    string
		servers map[string]raft.Server
		members []Member
		remove  string
		want    bool
	}{
		{"3 voters, 1 dead", config(voter("a"), voter("b"), voter("c")), alive("b"), "c", true},
		{"3 voters, 2 dead: no quorum to commit the change", config(voter("a"), voter("b"), voter("c")), nil, "c", false},
		{"5 voters, 2 dead", config(voter("a"), voter("b"), voter("c"), voter("d"), voter("e")), alive("b", "c"), "e", true},
		{"5 voters, 3 dead", config(voter("a"), voter("b"), voter("c"), voter("d"), voter("e")), alive("b"), "e", false},
		{"dead nonvoter", config(voter("a"), voter("b"), nonvoter("r")), alive("b"), "r", true},
		{"2 voters, the other dead", config(voter("a"), voter("b")), nil, "b", false},
		{"last voter", config(voter("a")), nil, "a", false},
		{"a live voter while another is dead: the two left need both", config(voter("a"), voter("b"), voter("c")), alive("b"), "b", false},
		{"a live voter of three, all alive", config(voter("a"), voter("b"), voter("c")), alive("b", "c"), "b", true},
		{"a live voter of five, one dead", config(voter("a"), voter("b"), voter("c"), voter("d"), voter("e")), alive("b", "c", "d"), "b", true},
		{"a live voter of five, two dead", config(voter("a"), voter("b"), voter("c"), voter("d"), voter("e")), alive("b", "c"), "b", false},
	}
	for _, tc := range cases {
		if got := canRemove("a", tc.servers, tc.members, tc.remove); got != tc.want {
			t.Errorf("%s: canRemove = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPlanReplacesAServerAtATakenAddress: a node restarted on a new data
// dir comes back with a new id at its old address. Raft refuses a second
// server at one address, so the old one is removed first, unless gossip
// says it is alive, or its removal would cost the quorum.
func TestPlanReplacesAServerAtATakenAddress(t *testing.T) {
	t0 := time.Unix(1000, 0)
	reborn := gossiping("c2", GossipAlive, t0)
	reborn.RaftAddr, reborn.HasState = "c:raft", false
	servers := config(voter("a"), voter("b"), voter("c"))

	expectPlan(t, "the old server dead", newReconciler().plan(planView(t0, servers,
		gossiping("b", GossipAlive, t0), gossiping("c", GossipDead, t0), reborn)), "remove c", "add-nonvoter c2")
	expectPlan(t, "the old server unknown to gossip", newReconciler().plan(planView(t0, servers,
		gossiping("b", GossipAlive, t0), reborn)), "remove c", "add-nonvoter c2")
	expectPlan(t, "the old server alive: a conflict", newReconciler().plan(planView(t0, servers,
		gossiping("b", GossipAlive, t0), gossiping("c", GossipAlive, t0), reborn)))
	expectPlan(t, "the removal would cost the quorum", newReconciler().plan(planView(t0, servers,
		gossiping("b", GossipDead, t0), reborn)))
}

// TestBootstrapServersNeedsExactlyTheExpectedVoters: a node bootstraps
// with exactly the expected voters, sorted by id; fewer wait, more are
// refused (two views could each pick a different subset), and so is a
// view with a member already in a cluster or expecting another number.
func TestBootstrapServersNeedsExactlyTheExpectedVoters(t *testing.T) {
	t0 := time.Unix(1000, 0)
	fresh := func(id string) Member {
		m := gossiping(id, GossipAlive, t0)
		m.HasState, m.Expect = false, 3
		return m
	}
	replica := fresh("r")
	replica.Role = RoleNonvoter
	servers, ok, why := bootstrapServers([]Member{fresh("c"), fresh("a"), replica, fresh("b")}, 3)
	if !ok || len(servers) != 3 || servers[0].ID != "a" || servers[2].ID != "c" {
		t.Fatalf("three expected voters and a nonvoter: %v %v %q", servers, ok, why)
	}
	dead := fresh("d")
	dead.State = GossipDead
	for name, members := range map[string][]Member{
		"two of three":     {fresh("a"), fresh("b"), dead},
		"four expecting 3": {fresh("a"), fresh("b"), fresh("c"), fresh("d")},
		"one in a cluster": {fresh("a"), fresh("b"), gossiping("c", GossipAlive, t0)},
		"one expecting 5":  {fresh("a"), fresh("b"), func() Member { m := fresh("c"); m.Expect = 5; return m }()},
	} {
		if servers, ok, why := bootstrapServers(members, 3); ok || why == "" {
			t.Errorf("%s: bootstraps with %v", name, servers)
		}
	}
}

// TestPlanRemovesALeavingMemberWithinQuorum: a member that asks to leave
// is removed while it still gossips, unless that would cost the quorum,
// and told once it is out; it is never added back meanwhile.
func TestPlanRemovesALeavingMemberWithinQuorum(t *testing.T) {
	t0 := time.Unix(1000, 0)
	leaving := gossiping("c", GossipAlive, t0)
	leaving.Leaving = true
	three := config(voter("a"), voter("b"), voter("c"))
	plan := newReconciler().plan(planView(t0, three, gossiping("b", GossipAlive, t0), leaving))
	expectPlan(t, "all alive", plan, "remove c")
	if !plan[0].leaveDone {
		t.Error("the removal of a leaving member does not tell it it may go")
	}
	expectPlan(t, "the other follower dead", newReconciler().plan(planView(t0, three, gossiping("b", GossipDead, t0), leaving)))
	// Out already (the message after its removal lost, or raft never showed
	// it the new configuration): told again, never added back.
	expectPlan(t, "already out", newReconciler().plan(planView(t0, config(voter("a"), voter("b")), gossiping("b", GossipAlive, t0), leaving)), "tell-leave-done c")
}
