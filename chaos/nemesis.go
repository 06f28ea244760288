package chaos

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Nemesis injects faults one at a time and in combination.
type Nemesis struct {
	C          *Cluster
	H          *History
	R          *rand.Rand
	Netem      bool
	Membership bool
	Hold       [2]time.Duration // how long a fault is held: min, max
	Counts     map[string]int
	// Anomalies found by checks that run right after a fault heals.
	Anomalies []string
	extra     int // nodes added by membership changes
}

type fault struct {
	name  string
	alone bool // membership changes: never combined
	// minHold, when set, holds the fault at least this long.
	minHold time.Duration
	// healed, when set, checks the cluster right after the fault heals,
	// before anything else (a restart, a new member) could mask a problem.
	healed func(n *Nemesis) []string
	run    func(n *Nemesis) (desc string, heal func(), err error)
}

var faults = []fault{
	{name: "kill-random", run: func(n *Nemesis) (string, func(), error) {
		v := n.pick(n.running())
		if v == nil {
			return "", nil, fmt.Errorf("no running node")
		}
		if err := v.Kill(); err != nil {
			return "", nil, err
		}
		return v.Name, func() { n.restart(v) }, nil
	}},
	{name: "kill-leader", run: func(n *Nemesis) (string, func(), error) {
		l := n.C.Leader()
		if l == nil {
			return "", nil, fmt.Errorf("no leader")
		}
		if err := l.Kill(); err != nil {
			return "", nil, err
		}
		return l.Name, func() { n.restart(l) }, nil
	}},
	{name: "stop-leader", run: func(n *Nemesis) (string, func(), error) {
		l := n.C.Leader()
		if l == nil {
			return "", nil, fmt.Errorf("no leader")
		}
		if err := l.Signal(syscall.SIGSTOP); err != nil {
			return "", nil, err
		}
		return l.Name, func() { l.Signal(syscall.SIGCONT) }, nil
	}},
	{name: "partition-leader", run: func(n *Nemesis) (string, func(), error) {
		l := n.C.Leader()
		if l == nil {
			return "", nil, fmt.Errorf("no leader")
		}
		var others []*Node
		for _, m := range n.C.Members() {
			if m != l {
				others = append(others, m)
			}
		}
		return n.partition([]*Node{l}, others)
	}},
	{name: "split", run: func(n *Nemesis) (string, func(), error) {
		m := n.C.Members()
		n.R.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		k := (len(m) - 1) / 2
		return n.partition(m[:k], m[k:])
	}},
	// Longer than memberlist's GossipToTheDeadTime (15 s in the local
	// profile the nodes run): both sides forget each other in gossip, and
	// only keyraft's reconnect can merge the rings once healed.
	{name: "long-partition", minHold: 20 * time.Second, run: func(n *Nemesis) (string, func(), error) {
		m := n.C.Members()
		n.R.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		return n.partition(m[:1], m[1:])
	}, healed: func(n *Nemesis) []string { return GossipHealed(n.C, 15*time.Second) }},
	{name: "one-way", run: func(n *Nemesis) (string, func(), error) {
		m := n.C.Members()
		var from *Node
		if l := n.C.Leader(); l != nil && n.R.Intn(2) == 0 {
			from = l // the leader's messages are lost, it still hears the others
		} else {
			from = m[n.R.Intn(len(m))]
		}
		var to []string
		for _, o := range m {
			if o != from {
				if err := n.C.Net.Drop(from.Slot, o.Slot); err != nil {
					return "", nil, err
				}
				to = append(to, o.Name)
			}
		}
		return from.Name + " -> " + strings.Join(to, ","), func() {
			for _, o := range m {
				if o != from {
					n.C.Net.Undrop(from.Slot, o.Slot)
				}
			}
		}, nil
	}},
	{name: "flap", run: func(n *Nemesis) (string, func(), error) {
		m := n.C.Members()
		n.R.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
		a, b := m[0], m[1]
		period := time.Duration(200+n.R.Intn(400)) * time.Millisecond
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			down := false
			for {
				if down {
					n.C.Net.Undrop(a.Slot, b.Slot)
					n.C.Net.Undrop(b.Slot, a.Slot)
				} else {
					n.C.Net.Drop(a.Slot, b.Slot)
					n.C.Net.Drop(b.Slot, a.Slot)
				}
				down = !down
				select {
				case <-stop:
					if down {
						n.C.Net.Undrop(a.Slot, b.Slot)
						n.C.Net.Undrop(b.Slot, a.Slot)
					}
					return
				case <-time.After(period):
				}
			}
		}()
		return fmt.Sprintf("%s<->%s every %v", a.Name, b.Name, period), func() { close(stop); wg.Wait() }, nil
	}},
	{name: "loss", run: func(n *Nemesis) (string, func(), error) {
		var desc string
		for _, m := range n.C.Members() {
			var err error
			if n.Netem {
				desc = "netem delay 50ms 20ms loss 10%"
				err = n.C.Net.Netem(m.Slot, "delay", "50ms", "20ms", "loss", "10%")
			} else {
				desc = "iptables random drop 20% (no sch_netem in this kernel)"
				err = n.C.Net.Loss(m.Slot, 0.2)
			}
			if err != nil {
				return "", nil, err
			}
		}
		return desc, func() { n.C.Net.Heal() }, nil
	}},
	{name: "slow-node", run: func(n *Nemesis) (string, func(), error) {
		v := n.pick(n.running())
		if v == nil {
			return "", nil, fmt.Errorf("no running node")
		}
		var desc string
		var err error
		if n.Netem {
			desc, err = "netem delay 150ms 100ms", n.C.Net.Netem(v.Slot, "delay", "150ms", "100ms")
		} else {
			desc, err = "tbf 1mbit, queueing up to 400ms (no sch_netem in this kernel)", n.C.Net.Throttle(v.Slot, "1mbit", "400ms")
		}
		if err != nil {
			return "", nil, err
		}
		return v.Name + " " + desc, func() { n.C.Net.Heal() }, nil
	}},
	{name: "add-nonvoter", alone: true, run: func(n *Nemesis) (string, func(), error) {
		if n.extra >= 2 {
			return "", nil, fmt.Errorf("enough nodes added")
		}
		v, err := n.addNode("--nonvoter")
		if err != nil {
			return "", nil, err
		}
		return v.Name, nil, nil
	}},
	{name: "remove-voter", alone: true, run: func(n *Nemesis) (string, func(), error) {
		return n.removeVoter(false)
	}},
	{name: "remove-leader", alone: true, run: func(n *Nemesis) (string, func(), error) {
		return n.removeVoter(true)
	}},
}

func (n *Nemesis) running() []*Node {
	var out []*Node
	for _, m := range n.C.Members() {
		if m.Running() {
			out = append(out, m)
		}
	}
	return out
}

func (n *Nemesis) pick(ns []*Node) *Node {
	if len(ns) == 0 {
		return nil
	}
	return ns[n.R.Intn(len(ns))]
}

func (n *Nemesis) restart(v *Node) {
	if v.Running() || v.Removed {
		return
	}
	if err := n.C.Start(v); err != nil {
		n.H.Event("restart " + v.Name + " failed: " + err.Error())
	}
}

func (n *Nemesis) partition(a, b []*Node) (string, func(), error) {
	for _, x := range a {
		for _, y := range b {
			if err := n.C.Net.Drop(x.Slot, y.Slot); err != nil {
				return "", nil, err
			}
			if err := n.C.Net.Drop(y.Slot, x.Slot); err != nil {
				return "", nil, err
			}
		}
	}
	names := func(ns []*Node) string {
		var s []string
		for _, x := range ns {
			s = append(s, x.Name)
		}
		return strings.Join(s, ",")
	}
	return names(a) + " | " + names(b), func() {
		for _, x := range a {
			for _, y := range b {
				n.C.Net.Undrop(x.Slot, y.Slot)
				n.C.Net.Undrop(y.Slot, x.Slot)
			}
		}
	}, nil
}

func (n *Nemesis) addNode(flags ...string) (*Node, error) {
	v, err := n.C.NewNode(flags...)
	if err != nil {
		return nil, err
	}
	n.extra++
	if err := n.C.Start(v); err != nil {
		return nil, err
	}
	return v, n.C.WaitReady(v, 30*time.Second)
}

// removeVoter removes a voter (the leader, or another) with DELETE
// /v1/cluster/nodes/{id}, stops it, and adds a fresh voter in its place.
func (n *Nemesis) removeVoter(leader bool) (string, func(), error) {
	l := n.C.Leader()
	if l == nil {
		return "", nil, fmt.Errorf("no leader")
	}
	st, err := n.C.Status(l)
	if err != nil {
		return "", nil, err
	}
	voters := map[string]bool{}
	for _, x := range st.Nodes {
		if x.Suffrage == "voter" {
			voters[x.ID] = true
		}
	}
	var victim *Node
	if leader {
		victim = l
	} else {
		var c []*Node
		for _, m := range n.C.Members() {
			if m != l && voters[m.ID()] {
				c = append(c, m)
			}
		}
		victim = n.pick(c)
	}
	if victim == nil {
		return "", nil, fmt.Errorf("no voter to remove")
	}
	code, b, err := n.C.Call(nil, n.pick(n.running()), "DELETE", "/v1/cluster/nodes/"+victim.ID(), nil)
	if err != nil || code >= 300 {
		// The removal may have committed anyway (a lost leadership while
		// committing answers an error): look before deciding.
		time.Sleep(2 * time.Second)
		if !n.inConfig(victim) {
			n.H.Event(fmt.Sprintf("remove %s answered %d %s %v, yet it left the configuration", victim.Name, code, b, err))
		} else {
			return "", nil, fmt.Errorf("remove %s: %d %s %v", victim.Name, code, b, err)
		}
	}
	n.C.mu.Lock()
	victim.Removed = true
	n.C.mu.Unlock()
	go func() { time.Sleep(3 * time.Second); victim.Kill() }()
	add, err := n.addNode()
	if err != nil {
		return victim.Name, nil, err
	}
	return fmt.Sprintf("%s removed, %s added", victim.Name, add.Name), nil, nil
}

// inConfig says whether a leader's configuration still lists v (true when
// it cannot tell).
func (n *Nemesis) inConfig(v *Node) bool {
	l := n.C.WaitLeader(10 * time.Second)
	if l == nil {
		return true
	}
	st, err := n.C.Status(l)
	if err != nil {
		return true
	}
	for _, x := range st.Nodes {
		if x.ID == v.ID() && (x.Suffrage == "voter" || x.Suffrage == "nonvoter") {
			return true
		}
	}
	return false
}

// Run injects faults until ctx is done, then heals everything.
func (n *Nemesis) Run(ctx context.Context) {
	if n.Counts == nil {
		n.Counts = map[string]int{}
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	// Let the clients build some keys first.
	if !sleep(2 * time.Second) {
		return
	}
	for ctx.Err() == nil {
		var chosen []fault
		f := faults[n.R.Intn(len(faults))]
		if f.alone && !n.Membership {
			continue
		}
		chosen = append(chosen, f)
		if !f.alone && n.R.Intn(3) == 0 {
			g := faults[n.R.Intn(len(faults))]
			if !g.alone && g.name != f.name {
				chosen = append(chosen, g)
			}
		}
		hold := n.Hold[0] + time.Duration(n.R.Int63n(int64(n.Hold[1]-n.Hold[0])+1))
		var heals []func()
		var checks []func(*Nemesis) []string
		for _, f := range chosen {
			hold = max(hold, f.minHold)
			desc, heal, err := f.run(n)
			if err != nil {
				n.H.Event(fmt.Sprintf("%s skipped: %v", f.name, err))
				continue
			}
			n.Counts[f.name]++
			n.H.Event(fmt.Sprintf("inject %s %s", f.name, desc))
			if heal != nil {
				heals = append(heals, heal)
			}
			if f.healed != nil {
				checks = append(checks, f.healed)
			}
		}
		sleep(hold)
		for i := len(heals) - 1; i >= 0; i-- {
			heals[i]()
		}
		n.HealAll()
		n.H.Event("healed")
		for _, check := range checks {
			n.Anomalies = append(n.Anomalies, check(n)...)
		}
		if !sleep(time.Duration(1500+n.R.Intn(2000)) * time.Millisecond) {
			break
		}
	}
}

// HealAll removes every network fault, resumes stopped nodes and restarts
// dead members.
func (n *Nemesis) HealAll() {
	n.C.Net.Heal()
	for _, m := range n.C.Members() {
		m.Signal(syscall.SIGCONT)
		n.restart(m)
	}
}
