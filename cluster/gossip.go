package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Roles a node announces.
const (
	RoleVoter    = "voter"
	RoleNonvoter = "nonvoter"
)

// Gossip states of a member as this node sees it.
const (
	GossipAlive = "alive"
	GossipDead  = "dead"
	GossipLeft  = "left"
)

// Member is what a node announces about itself over gossip, plus its state
// as seen from here.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft"`
	HTTPAddr string `json:"http"`
	Role     string `json:"role"`
	Version  string `json:"ver"`
	// Expect is the node's --bootstrap-expect (0 = none).
	Expect int `json:"expect,omitempty"`
	// HasState is true once the node belongs to a Raft cluster (it has a
	// log or snapshot): such a node never takes part in a new bootstrap.
	HasState bool `json:"state,omitempty"`
	// Removed is true once an operator removed the node (until it restarts):
	// no leader adds it back, whatever it believes.
	Removed bool `json:"removed,omitempty"`
	// Leaving is true while the node waits for the leader to remove it,
	// before it leaves the gossip ring (Node.Leave).
	Leaving bool `json:"leaving,omitempty"`
	// Index is the node's last Raft log index when it last announced
	// itself. A candidate for promotion keeps it current
	// (announceProgress): the leader promotes it only once it reaches the
	// leader's last index when the leader first saw it as a nonvoter, past
	// the configuration entry that added it, which a node the leader cannot
	// reach never does.
	Index uint64 `json:"index,omitempty"`

	State string    `json:"-"` // GossipAlive, …
	Since time.Time `json:"-"` // when State last changed
	// GossipAddr is where memberlist last reached the node.
	GossipAddr string `json:"-"`
}

// Gossip message types (first byte of a memberlist user message).
const (
	msgUsage   byte = 'u' // a follower's usage batch for the leader
	msgRemoved byte = 'r' // the leader tells a node it was removed
	msgLeaving byte = 'l' // a node announces a permanent leave (payload: its id)
	// msgLeaveDone: the leader tells a node that asked to leave that it is
	// out of the Raft configuration (raft itself may never show it: a
	// removed follower gets the new configuration only on a best effort).
	msgLeaveDone byte = 'd'
)

// gossip runs the memberlist ring and keeps the member table.
type gossip struct {
	node *Node
	ml   *memberlist.Memberlist

	mu      sync.RWMutex
	members map[string]*Member
	// leaving holds nodes that announced a permanent leave: memberlist
	// reports a leave and a death through the same callback, so this is
	// how the two are told apart.
	leaving map[string]bool

	// reconnectEvery paces reconnectLoop: a third of the time memberlist
	// keeps gossiping to the dead, so a rejoin is tried well within it.
	reconnectEvery time.Duration
	// promoteAfter is how long a new member must stay alive as a nonvoter
	// before it may vote (as well as hold the configuration that added
	// it): memberlist's time from suspecting a node to declaring it dead.
	promoteAfter time.Duration
	// announcedAt is when announceProgress last re-announced this node.
	announcedAt time.Time

	changed chan struct{} // poked on every membership event (capacity 1)
	inbox   chan []byte   // user messages, handled off memberlist's goroutine

	// stopMu orders leave and shutdown: memberlist panics on a Leave after
	// its Shutdown, and a removed node leaves on a goroutine of its own
	// that the node's shutdown does not wait for.
	stopMu  sync.Mutex
	stopped bool
}

func (g *gossip) poke() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// startGossip creates the memberlist on cfg.GossipAddr.
func (n *Node) startGossip() error {
	g := &gossip{node: n, members: map[string]*Member{}, leaving: map[string]bool{}, changed: make(chan struct{}, 1), inbox: make(chan []byte, 64)}
	host, portStr, err := net.SplitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("gossip address %q: %w", n.cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("gossip address %q: bad port", n.cfg.GossipAddr)
	}
	var mc *memberlist.Config
	switch n.cfg.GossipProfile {
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	default:
		return fmt.Errorf("gossip profile %q: want lan, local or wan", n.cfg.GossipProfile)
	}
	mc.Name = n.id
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.SecretKey = n.cfg.GossipKey
	// A node that comes back at another address (a new pod IP) may reclaim
	// its name once its old incarnation has been dead this long.
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.Delegate = g
	mc.Events = g
	mc.Logger = n.log.Named("gossip").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	g.reconnectEvery = mc.GossipToTheDeadTime / 3
	g.promoteAfter = mc.ProbeInterval * time.Duration(mc.SuspicionMult)
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("starting gossip: %w", err)
	}
	n.gossip = g
	return nil
}

func (g *gossip) self() Member {
	n := g.node
	role := RoleVoter
	if n.cfg.Nonvoter {
		role = RoleNonvoter
	}
	return Member{ID: n.id, RaftAddr: n.RaftAddr(), HTTPAddr: n.cfg.HTTPAddr, Role: role, Version: n.cfg.Version,
		Expect: n.cfg.BootstrapExpect, HasState: n.hasState(), Removed: n.removed.Load(), Leaving: n.leaving.Load(), Index: n.raft.LastIndex()}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(g.self())
	if len(b) > limit {
		g.node.log.Error("gossip metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg implements memberlist.Delegate. It must not block.
func (g *gossip) NotifyMsg(b []byte) {
	msg := append([]byte(nil), b...)
	select {
	case g.inbox <- msg:
	default:
		g.node.log.Warn("gossip inbox full; message dropped")
	}
}

func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyLeave, NotifyUpdate implement memberlist.EventDelegate.
// (memberlist does not set Node.State in these callbacks; the callback
// itself says alive or gone.)
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.record(n, GossipAlive) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.record(n, GossipDead) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.record(n, GossipAlive) }

func (g *gossip) record(n *memberlist.Node, state string) {
	var m Member
	if err := json.Unmarshal(n.Meta, &m); err != nil || m.ID != n.Name {
		g.node.log.Warn("ignoring gossip member with unreadable metadata", "name", n.Name)
		return
	}
	g.mu.Lock()
	if state == GossipAlive {
		delete(g.leaving, m.ID) // back after a leave: a new membership
	} else if g.leaving[m.ID] {
		state = GossipLeft
	}
	m.State, m.GossipAddr = state, n.Address()
	old := g.members[m.ID]
	m.Since = time.Now()
	if old != nil && old.State == m.State {
		m.Since = old.Since
	}
	g.members[m.ID] = &m
	g.mu.Unlock()
	g.poke()
}

// snapshot returns a copy of the member table, sorted by id. (memberlist
// v0.6.0 does not tell when it suspects a node: its Node.State is never
// set, and no delegate hears of suspicion, so a member is alive until
// declared dead.)
func (g *gossip) snapshot() []Member {
	g.mu.RLock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	g.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// markLeaving records a node's announced leave; if it is already gone from
// the ring, its death becomes a leave.
func (g *gossip) markLeaving(id string) {
	g.mu.Lock()
	g.leaving[id] = true
	if m := g.members[id]; m != nil && m.State == GossipDead {
		m.State, m.Since = GossipLeft, time.Now()
	}
	g.mu.Unlock()
	g.poke()
}

func (g *gossip) member(id string) (Member, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m, ok := g.members[id]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// joinLoop retries joining the given peers until one answers or the node stops.
func (g *gossip) joinLoop(peers []string) {
	defer g.node.wg.Done()
	type joined struct {
		n   int
		err error
	}
	for attempt := 0; ; attempt++ {
		// Not waited for on shutdown: memberlist tries the peers one by
		// one, each for up to its TCPTimeout (10 s on a LAN), so peers
		// that drop packets would hold a SIGTERM up for as long.
		done := make(chan joined, 1)
		go func() {
			n, err := g.ml.Join(peers)
			done <- joined{n, err}
		}()
		var n int
		var err error
		select {
		case <-g.node.stop:
			return
		case r := <-done:
			n, err = r.n, r.err
		}
		if err == nil && n > 0 {
			g.node.log.Info("joined the gossip ring", "contacted", n)
			return
		}
		if attempt%10 == 0 {
			g.node.log.Warn("joining the gossip ring failed; retrying", "peers", peers, "error", err)
		}
		select {
		case <-g.node.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

// reconnectLoop keeps trying to re-join members that died rather than left.
// memberlist stops gossiping to a dead node after GossipToTheDeadTime, so
// without this the two sides of a partition that outlasted it would never
// merge again once the network heals, and the leader would go on to reap
// healthy nodes after --reap-after (Serf reconnects for the same reason).
func (g *gossip) reconnectLoop(every time.Duration) {
	g.node.every(every, func() bool {
		g.forgetGone(time.Now(), g.node.cfg.ReapAfter, byID(g.node.raftServers()))
		for _, addr := range g.deadAddrs() {
			// Not waited for on shutdown: a join to an address that drops
			// packets blocks for memberlist's TCPTimeout.
			go func() {
				if _, err := g.ml.Join([]string{addr}); err == nil {
					g.node.log.Info("reconnected to a member gossip had declared dead", "addr", addr)
				}
			}()
		}
		return true
	})
}

// deadAddrs lists the gossip addresses of members that died without
// leaving, that memberlist no longer counts as alive, and that have not
// been dead longer than --reap-after (by then the leader removes them).
func (g *gossip) deadAddrs() []string {
	alive := map[string]bool{}
	for _, n := range g.ml.Members() { // every member not dead or left
		alive[n.Name] = true
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	var out []string
	for id, m := range g.members {
		if m.State == GossipDead && !alive[id] && m.GossipAddr != "" && id != g.node.id &&
			time.Since(m.Since) < g.node.cfg.ReapAfter {
			out = append(out, m.GossipAddr)
		}
	}
	return out
}

// forgetGone drops the members that have been dead or gone for longer than
// after and are not in the Raft configuration: the leader has reaped them,
// nothing reconnects to them, and a node that comes back is recorded anew.
// Without it every id ever seen (each restart on a new data dir is a new
// one) stays in the table and in the cluster status for good. One still
// in the configuration stays, so that reaping it (refused while it would
// cost the quorum) does not start its wait over as unknown to gossip.
func (g *gossip) forgetGone(now time.Time, after time.Duration, inConfig map[string]raft.Server) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, m := range g.members {
		if _, kept := inConfig[id]; !kept && (m.State == GossipDead || m.State == GossipLeft) && now.Sub(m.Since) > after {
			delete(g.members, id)
			delete(g.leaving, id)
		}
	}
}

// send delivers a user message to the member with this id over TCP.
func (g *gossip) send(id string, msg []byte) error {
	for _, n := range g.ml.Members() {
		if n.Name == id {
			return g.ml.SendReliable(n, msg)
		}
	}
	return fmt.Errorf("node %s is not an alive gossip member", id)
}

// announceProgress re-announces this node's log index, at most every
// 500 ms, while it is a candidate: started as a voter, in the configuration
// as a nonvoter. Other nodes' metadata does not change with their index, so
// gossip carries these updates only during a join.
func (n *Node) announceProgress() {
	g := n.gossip
	if n.cfg.Nonvoter || time.Since(g.announcedAt) < 500*time.Millisecond {
		return
	}
	if m, ok := g.member(n.id); ok && m.Index >= n.raft.LastIndex() {
		return
	}
	candidate := false
	for _, s := range n.raftServers() {
		candidate = candidate || (string(s.ID) == n.id && s.Suffrage == raft.Nonvoter)
	}
	if candidate {
		g.announcedAt = time.Now()
		g.announce()
	}
}

// announce re-broadcasts this node's metadata (after HasState changes).
func (g *gossip) announce() {
	if err := g.ml.UpdateNode(time.Second); err != nil {
		g.node.log.Debug("gossip metadata update", "error", err)
	}
}

// leave announces a permanent departure and stops gossiping.
func (g *gossip) leave(timeout time.Duration) {
	// To every member at once, waiting at most timeout: one by one, a
	// member that does not answer held each send for memberlist's TCP
	// timeout, which could take a leave past a pod's grace period.
	msg := append([]byte{msgLeaving}, g.node.id...)
	var sent sync.WaitGroup
	for _, n := range g.ml.Members() {
		if n.Name != g.node.id {
			sent.Go(func() {
				if err := g.ml.SendReliable(n, msg); err != nil {
					g.node.log.Debug("announcing the leave", "to", n.Name, "error", err)
				}
			})
		}
	}
	all := make(chan struct{})
	go func() { sent.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(timeout):
	}
	g.stopMu.Lock()
	defer g.stopMu.Unlock()
	if g.stopped {
		return // shut down meanwhile: gone from the ring anyway
	}
	if err := g.ml.Leave(timeout); err != nil {
		g.node.log.Warn("leaving the gossip ring", "error", err)
	}
}

func (g *gossip) shutdown() {
	g.stopMu.Lock()
	defer g.stopMu.Unlock()
	g.stopped = true
	if err := g.ml.Shutdown(); err != nil {
		g.node.log.Warn("stopping gossip", "error", err)
	}
}
