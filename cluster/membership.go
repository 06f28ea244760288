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
	var waitingFor string
	n.every(200*time.Millisecond, func() bool {
		if n.hasState() {
			return false
		}
		servers, ready, why := bootstrapServers(n.gossip.snapshot(), n.cfg.BootstrapExpect)
		if !ready {
			if why != waitingFor {
				// Said when it changes: at the default level an operator
				// sees why the cluster does not form (too many voters).
				n.log.Info("waiting to bootstrap", "reason", why)
				waitingFor = why
			}
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
		n.resumeVoting("bootstrapped the cluster") // its state is the cluster's first: nothing to forget
		n.gossip.announce()
		return false
	})
}

// bootstrapServers decides, from gossip's members, whether this node
// bootstraps now and with which servers: exactly the expected number of
// voters, all expecting that number, none in a cluster yet. More voters
// than expected is refused rather than cut down: nodes whose views differ
// would each pick another subset and bootstrap two clusters.
func bootstrapServers(members []Member, expect int) ([]raft.Server, bool, string) {
	var servers []raft.Server
	for _, m := range members {
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
	switch {
	case len(servers) < expect:
		return nil, false, fmt.Sprintf("%d of %d expected voters seen", len(servers), expect)
	case len(servers) > expect:
		return nil, false, fmt.Sprintf("%d voters expecting %d seen: more than expected, so none bootstraps (start them with --bootstrap-expect %d, or start the extra ones with --join once the cluster is formed)", len(servers), expect, len(servers))
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	return servers, true, ""
}

// reconcile runs one pass on the leader: it plans the changes from the
// current configuration and gossip (reconcile.go) and makes them.
func (n *Node) reconcile(rc *reconciler) {
	if n.gossip == nil {
		return
	}
	n.membershipMu.Lock()
	defer n.membershipMu.Unlock()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("reading the raft configuration", "error", err)
		rc.wakeAt = time.Time{} // the next periodic pass tries again
		return
	}
	changes := rc.plan(membershipView{
		self: n.id, servers: byID(f.Configuration().Servers), lastIndex: n.raft.LastIndex(), members: n.gossip.snapshot(),
		now: time.Now(), reapAfter: n.cfg.ReapAfter, promoteAfter: n.gossip.promoteAfter, removed: n.fsm.NodeRemoved,
	})
	for _, c := range changes {
		switch c.kind {
		case addNonvoter:
			n.addNonvoter(c.member)
		case promoteVoter:
			n.promoteVoter(c.member)
		case removeServer:
			if n.removeServer(c.id, c.why) && c.leaveDone {
				n.tell(c.id, msgLeaveDone)
			}
		case tellRemoved:
			// Only once it is out of the committed configuration (the
			// removal above may have failed, or not committed yet): the
			// node then leaves elections for good. Otherwise a later pass
			// tells it.
			if n.outOfCommittedConfig(c.id) {
				n.tell(c.id, msgRemoved)
			}
		case tellLeaveDone:
			n.tell(c.id, msgLeaveDone)
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

func (n *Node) removeServer(id, why string) bool {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		n.log.Warn("removing a member from raft failed", "id", id, "error", err)
		return false
	}
	n.log.Info("removed a member from raft", "id", id, "reason", why)
	return true
}

// tell sends a one-byte gossip message to node id (best effort: the
// reconciliation passes repeat what must arrive).
func (n *Node) tell(id string, msg byte) {
	if err := n.gossip.send(id, []byte{msg}); err != nil {
		n.log.Debug("telling a member", "id", id, "message", string(msg), "error", err)
	}
}

// RemoveNode takes a node out of the cluster for good (DELETE
// /v1/cluster/nodes/{id}): it commits the removal (fsm.OpNodeRemoved, with
// audit), then takes the node out of the Raft configuration and tells it.
// Leader only. Removing the leader itself hands leadership over first
// (ErrHandedOver); the caller then retries on the new leader. The removal
// is committed first so that every later leader keeps the node out: should
// the configuration change fail, reconciliation completes it.
func (n *Node) RemoveNode(id string, audit *fsm.AuditEntry) error {
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
		return ErrHandedOver
	}
	n.membershipMu.Lock()
	defer n.membershipMu.Unlock()
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
	if _, _, err := n.Apply(&fsm.Command{Op: fsm.OpNodeRemoved, ID: id, Audit: audit}); err != nil {
		return err
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		// The removal is decided: reconciliation, here or on the next
		// leader, takes the server out of the configuration, and tells it.
		n.log.Warn("the removal is committed, but taking the node out of the raft configuration failed; reconciliation retries", "id", id, "error", err)
	} else if n.gossip != nil {
		// Tell it, so it stops serving and leaves elections and the ring.
		// Reconciliation tells it again for as long as it gossips.
		n.tell(id, msgRemoved)
	}
	n.log.Info("removed a node on operator request", "id", id)
	return nil
}

// Errors of RemoveNode. ErrUnknownNode: the id is not in the
// configuration. ErrHandedOver: the leader was asked to remove itself and
// handed leadership over; the new leader completes the removal.
var (
	ErrUnknownNode     = errors.New("no such node in the cluster")
	ErrHandedOver      = errors.New("leadership was handed over so that the new leader removes this node")
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
				n.stopAsRemoved(true)
			case msgLeaveDone:
				if n.leaving.Load() {
					n.leaveDone.Store(true)
				}
			}
		}
	}
}

// stopAsRemoved makes this node, which an operator removed, stop serving
// (verify answers STALE, admin requests 503) and say so in its gossip
// metadata, so that no leader adds it back. It runs when the leader says so
// (msgRemoved, sent once the node is out of the Raft configuration), or
// when this node applies its own removal, also after a restart.
//
// Once the node is out of the configuration too (outOfConfig, or its own
// committed configuration shows it), it also stays out of elections for good (a node
// removed while down never receives its removal, and would campaign for
// good) and leaves the gossip ring. Not before: between the removal's
// commit and the configuration change's, a quorum may still need its vote,
// and the leader may still need to reach it over gossip.
func (n *Node) stopAsRemoved(outOfConfig bool) {
	if !n.removed.Swap(true) {
		n.log.Warn("this node was removed from the cluster; it serves no requests, and leaves the gossip ring and elections once out of the raft configuration")
		if n.gossip != nil {
			n.gossip.announce()
		}
	}
	if !outOfConfig && !n.outOfCommittedConfig(n.id) {
		return
	}
	n.retireOnce.Do(func() {
		n.log.Warn("this node is out of the raft configuration: it takes no part in elections and leaves the gossip ring")
		if n.gossip == nil {
			n.transport.retire()
			return
		}
		go func() {
			// A removed leader hands over first: it answers no request.
			n.handOver()
			n.transport.retire()
			n.gossip.leave(2 * time.Second)
		}()
	})
}

// watchOwnRemoval stops the node once its state says an operator removed
// it (a node that was down or cut off when it was removed, or that
// restarts after it, never heard the leader say so), and retires it once
// its configuration no longer holds it.
func (n *Node) watchOwnRemoval() {
	n.every(time.Second, func() bool {
		if n.fsm.NodeRemoved(n.id) {
			n.stopAsRemoved(false)
		}
		return !n.transport.isRetired()
	})
}
