package cluster

import (
	"net"
	"slices"
	"testing"
	"time"
)

// TestForgetGoneDropsLongGoneMembers: members dead or left for longer than
// the reap time leave the table (and a recorded leave with them); alive
// ones, those gone for less, and those still in the Raft configuration
// stay.
func TestForgetGoneDropsLongGoneMembers(t *testing.T) {
	now := time.Unix(10_000, 0)
	g := &gossip{members: map[string]*Member{}, leaving: map[string]bool{"left-long": true, "left-now": true}}
	for id, m := range map[string]Member{
		"alive-long": {State: GossipAlive, Since: now.Add(-time.Hour)},
		"dead-long":  {State: GossipDead, Since: now.Add(-time.Hour)},
		"left-long":  {State: GossipLeft, Since: now.Add(-time.Hour)},
		"dead-now":   {State: GossipDead, Since: now.Add(-time.Second)},
		"dead-voter": {State: GossipDead, Since: now.Add(-time.Hour)},
		"left-now":   {State: GossipLeft, Since: now.Add(-time.Second)},
	} {
		m.ID = id
		g.members[id] = &m
	}
	g.forgetGone(now, time.Minute, config(voter("dead-voter")))
	var kept []string
	for _, m := range g.snapshot() {
		kept = append(kept, m.ID)
	}
	if want := []string{"alive-long", "dead-now", "dead-voter", "left-now"}; !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	if g.leaving["left-long"] || !g.leaving["left-now"] {
		t.Fatalf("leaves kept: %v", g.leaving)
	}
}

// TestGossipLeaveAfterShutdown: a removed node leaves the ring on a
// goroutine of its own, which may reach memberlist's Leave after the
// node's shutdown stopped gossip; memberlist panics on that, so leave
// must see the shutdown and do nothing.
func TestGossipLeaveAfterShutdown(t *testing.T) {
	cfg := singleNodeConfig(t)
	cfg.GossipAddr, cfg.GossipProfile = freeAddr(t), "local"
	n := openLeader(t, cfg)
	n.gossip.shutdown()
	n.gossip.leave(100 * time.Millisecond)
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDoesNotWaitForAJoin: a node still trying to join peers that
// accept connections and never answer (memberlist waits out its TCP
// timeout, 10 s on a LAN, for each) shuts down without waiting for it.
func TestShutdownDoesNotWaitForAJoin(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered, until the test ends
		}
	}()
	cfg := singleNodeConfig(t)
	cfg.GossipAddr, cfg.GossipProfile, cfg.Join = freeAddr(t), "lan", []string{silent.Addr().String()}
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the join is under way
	start := time.Now()
	n.Shutdown()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v: it waited for the join", d)
	}
}
