package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/fsm"
)

// This file turns gossip membership into Raft membership. Only the leader
// changes the Raft configuration; gossip only proposes what the operator
// allowed (a node started with --join, a node that left, a node dead past
// --reap-after).

// bootstrapLoop forms a new cluster once --bootstrap-expect voters that all
// expect the same number, none of which belongs to a cluster yet, see each
// other. Every one of them bootstraps with the same server list (sorted by
// id), which Raft accepts as one cluster. A node that sees a member that
// already has Raft state never bootstraps: it waits to be added.
func (n *Node) bootstrapLoop() {
	n.every(200*time.Millisecond, func() bool {
		if n.hasState() {
			return false
		}
		servers, ready, why := n.bootstrapServers()
		if !ready {
			n.log.Trace("waiting to bootstrap", "reason", why)
			return true
		}
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		if errors.Is(err, raft.ErrCantBootstrap) {
			return false // a leader reached it first: it votes once caught up
		}
		if err != nil {
			n.log.Error("bootstrapping the cluster failed", "error", err)
			return true
		}
		n.log.Info("bootstrapped a new cluster", "servers", len(servers))
		n.transport.resume() // its state is the cluster's first: nothing to forget
		n.gossip.announce()
		return false
	})
}

// bootstrapServers decides whether the expected voters are all here.
func (n *Node) bootstrapServers() ([]raft.Server, bool, string) {
	expect := n.cfg.BootstrapExpect
	var servers []raft.Server
	for _, m := range n.gossip.snapshot() {
		if m.State != GossipAlive {
			continue
		}
		if m.HasState {
			return nil, false, "member " + m.ID + " already belongs to a cluster; waiting to be added"
		}
		if m.Role != RoleVoter {
			continue
		}
		if m.Expect != expect {
			return nil, false, fmt.Sprintf("member %s expects %d servers, this node %d", m.ID, m.Expect, expect)
		}
		servers = append(servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr), Suffrage: raft.Voter})
	}
	if len(servers) < expect {
		return nil, false, fmt.Sprintf("%d of %d expected voters seen", len(servers), expect)
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	return servers, true, ""
}

// markRemoved remembers that an operator removed id, so reconciliation does
// not add it back while it is still alive in gossip (until it leaves or dies).
func (n *Node) markRemoved(id string) {
	n.tombMu.Lock()
	defer n.tombMu.Unlock()
	n.tombstones[id] = time.Now()
}

func (n *Node) isTombstoned(id string) bool {
	n.tombMu.Lock()
	defer n.tombMu.Unlock()
	_, ok := n.tombstones[id]
	return ok
}

func (n *Node) forgetTombstone(id string) {
	n.tombMu.Lock()
	defer n.tombMu.Unlock()
	delete(n.tombstones, id)
}

// reconcile runs one pass on the leader: it plans the changes from the
// current configuration and gossip (reconcile.go) and makes them.
func (n *Node) reconcile(rc *reconciler) {
	if n.gossip == nil {
		return
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("reading the raft configuration", "error", err)
		rc.wakeAt = time.Time{} // the next periodic pass tries again
		return
	}
	servers := byID(f.Configuration().Servers)
	members := n.gossip.snapshot()
	for _, m := range members {
		if m.State == GossipLeft || m.State == GossipDead {
			n.forgetTombstone(m.ID) // gone: a later comeback is a new membership
		}
	}
	changes := rc.plan(membershipView{
		self: n.id, servers: servers, lastIndex: n.raft.LastIndex(), members: members, now: time.Now(),
		reapAfter: n.cfg.ReapAfter, promoteAfter: n.gossip.promoteAfter, tombstoned: n.isTombstoned,
	})
	for _, c := range changes {
		switch c.kind {
		case addNonvoter:
			n.addNonvoter(c.member)
		case promoteVoter:
			n.promoteVoter(c.member)
		case removeServer:
			n.removeServer(c.id, c.why)
		}
	}
}

func (n *Node) addNonvoter(m Member) {
	n.snapshotForNewMember()
	err := n.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
	if err != nil {
		n.log.Warn("adding a member to raft failed", "id", m.ID, "error", err)
		return
	}
	n.log.Info("added a member to raft as a nonvoter", "id", m.ID, "raft", m.RaftAddr, "role", m.Role)
}

func (n *Node) promoteVoter(m Member) {
	err := n.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error()
	if err != nil {
		n.log.Warn("promoting a member to voter failed", "id", m.ID, "error", err)
		return
	}
	n.log.Info("promoted a member to voter", "id", m.ID)
}

func (n *Node) removeServer(id, why string) {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		n.log.Warn("removing a member from raft failed", "id", id, "error", err)
		return
	}
	n.log.Info("removed a member from raft", "id", id, "reason", why)
}

// RemoveNode takes a node out of the Raft configuration and the gossip ring
// (DELETE /v1/cluster/nodes/{id}). Leader only. Removing the leader itself
// hands leadership over first; the caller then retries on the new leader.
func (n *Node) RemoveNode(id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if id == n.id {
		if n.otherVoters() == 0 {
			return errors.New("the only voter cannot remove itself")
		}
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("handing over leadership before removal: %w", err)
		}
		return ErrNotLeader
	}
	servers := byID(n.raftServers())
	if _, known := servers[id]; !known {
		return ErrUnknownNode
	}
	// Raft uses a configuration as soon as it is appended: a removal that
	// leaves the live voters short of a majority stalls before it commits,
	// and the cluster has no leader until the dead come back. Without
	// gossip there is no view of who is alive to check against.
	if n.gossip != nil && !canRemove(n.id, servers, n.gossip.snapshot(), id) {
		return ErrWouldLoseQuorum
	}
	n.markRemoved(id)
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		n.forgetTombstone(id)
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			// The removal may or may not have committed: the caller retries
			// (removing a node that is already gone answers 404).
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return err
	}
	if n.gossip != nil {
		// Tell it, so it leaves the ring and stops serving writes. If it is
		// unreachable it has nothing to serve anyway.
		if err := n.gossip.send(id, []byte{msgRemoved}); err != nil {
			n.log.Debug("telling a removed node", "id", id, "error", err)
		}
	}
	n.log.Info("removed a node on operator request", "id", id)
	return nil
}

// Errors of RemoveNode. ErrUnknownNode: the id is not in the configuration.
var (
	ErrUnknownNode     = errors.New("no such node in the cluster")
	ErrWouldLoseQuorum = errors.New("removing this node would leave the live voters short of a majority: bring the dead voters back, or remove them first")
)

// byID indexes servers by their id.
func byID(servers []raft.Server) map[string]raft.Server {
	m := make(map[string]raft.Server, len(servers))
	for _, s := range servers {
		m[string(s.ID)] = s
	}
	return m
}

func (n *Node) raftServers() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

// handleInbox processes gossip user messages until the node stops.
func (n *Node) handleInbox() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case msg := <-n.gossip.inbox:
			if len(msg) == 0 {
				continue
			}
			switch msg[0] {
			case msgUsage:
				var usage []fsm.Usage
				if err := json.Unmarshal(msg[1:], &usage); err != nil || len(usage) > usageChunk {
					n.log.Warn("ignoring an unreadable usage message")
					continue
				}
				if _, _, err := n.Apply(&fsm.Command{Op: fsm.OpUsage, Usage: usage}); err != nil {
					n.log.Debug("applying forwarded usage", "error", err)
				}
			case msgLeaving:
				n.gossip.markLeaving(string(msg[1:]))
			case msgRemoved:
				n.log.Warn("this node was removed from the cluster; leaving the gossip ring")
				n.removed.Store(true)
				go func() {
					// Say so in the metadata first: a leader whose gossip
					// has not seen the leave yet must not add it back.
					n.gossip.announce()
					n.gossip.leave(2 * time.Second)
				}()
			}
		}
	}
}
