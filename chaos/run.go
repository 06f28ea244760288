package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Config is one run.
type Config struct {
	Bin        string        // keyraft binary
	Nodes      int           // 3 or 5
	Clients    int           // concurrent clients
	Duration   time.Duration // how long faults and load run
	Seed       int64
	Dir        string // run folder (history, logs)
	MaxStale   time.Duration
	Election   time.Duration
	Membership bool
	Keep       bool // keep the folder on success too
	Log        func(format string, args ...any)
}

// Report is what a run found.
type Report struct {
	Seed          int64          `json:"seed"`
	Nodes         int            `json:"nodes"`
	Duration      string         `json:"duration"`
	Faults        map[string]int `json:"faults"`
	Ops           map[string]int `json:"ops"` // by kind/result
	AdminChecked  int            `json:"admin_ops_checked"`
	Linearizable  string         `json:"linearizable"`
	DurableChecks int            `json:"durable_checks"`
	BoundChecks   int            `json:"revocation_bound_verifies"`
	RYWChecks     int            `json:"read_your_writes_reads"`
	Converged     string         `json:"converged"`
	// PlaintextFiles is how many data and log files were searched for tokens.
	PlaintextFiles int      `json:"plaintext_files_scanned"`
	Anomalies      []string `json:"anomalies"`
	Dir            string   `json:"dir"`
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keyraft chaos: seed %d, %d nodes, %s of faults and load\n", r.Seed, r.Nodes, r.Duration)
	var names []string
	total := 0
	for k, v := range r.Faults {
		names = append(names, fmt.Sprintf("%s=%d", k, v))
		total += v
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "faults injected: %d (%s)\n", total, strings.Join(names, " "))
	var ops []string
	for k, v := range r.Ops {
		ops = append(ops, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(ops)
	fmt.Fprintf(&b, "operations: %s\n", strings.Join(ops, " "))
	fmt.Fprintf(&b, "linearizability (porcupine, %d admin ops): %s\n", r.AdminChecked, r.Linearizable)
	fmt.Fprintf(&b, "no acknowledged write lost: %d key×node checks\n", r.DurableChecks)
	fmt.Fprintf(&b, "revocation bound: %d verifies after the bound\n", r.BoundChecks)
	fmt.Fprintf(&b, "read-your-writes: %d reads with min_index answered\n", r.RYWChecks)
	fmt.Fprintf(&b, "convergence: %s\n", r.Converged)
	fmt.Fprintf(&b, "plaintext at rest: %d data and log files searched\n", r.PlaintextFiles)
	fmt.Fprintf(&b, "anomalies: %d\n", len(r.Anomalies))
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	return b.String()
}

// Run runs the harness. ctx cancelled (Ctrl-C) aborts it; everything is
// cleaned up before Run returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	logf := cfg.Log
	rep := &Report{Seed: cfg.Seed, Nodes: cfg.Nodes, Duration: cfg.Duration.String(), Ops: map[string]int{}, Dir: cfg.Dir}
	nw := &Net{Prefix: "krc", Subnet: "10.77.0"}
	if err := nw.Setup(); err != nil {
		return nil, err
	}
	c := NewCluster(cfg.Bin, cfg.Dir, nw, cfg.MaxStale, cfg.Election, logf)
	defer func() {
		c.KillAll()
		nw.Teardown()
	}()
	netem := nw.NetemAvailable()
	logf("network: bridge %s, namespaces %s-n*, tc netem available: %v", nw.bridge(), nw.Prefix, netem)

	for i := 0; i < cfg.Nodes; i++ {
		if _, err := c.NewNode("--bootstrap-expect", fmt.Sprint(cfg.Nodes)); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Members() {
		if err := c.Start(n); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Members() {
		if err := c.WaitReady(n, 30*time.Second); err != nil {
			return nil, err
		}
	}
	for deadline := time.Now().Add(20 * time.Second); c.Root == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		c.Root = c.FindRoot()
	}
	if c.Root == "" {
		return nil, fmt.Errorf("no root key printed")
	}
	if l := c.WaitLeader(20 * time.Second); l == nil {
		return nil, fmt.Errorf("no leader")
	} else {
		logf("cluster formed: %d nodes, leader %s", cfg.Nodes, l.Name)
	}

	h := NewHistory()
	h.Event("cluster formed")
	w := &Workload{C: c, H: h, Clients: cfg.Clients, MaxKeys: 12}
	nem := &Nemesis{C: c, H: h, R: rand.New(rand.NewSource(cfg.Seed)), Netem: netem, Membership: cfg.Membership,
		Hold: [2]time.Duration{2 * time.Second, 5 * time.Second}}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	done := make(chan struct{})
	go func() { w.Run(runCtx, cfg.Seed); close(done) }()
	go func() {
		last := 0
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				h.mu.Lock()
				n, ev := len(h.ops), ""
				if len(h.Events) > 0 {
					ev = h.Events[len(h.Events)-1].What
				}
				h.mu.Unlock()
				logf("t=%s ops=%d (+%d) last event: %s", ts(h.Now()), n, n-last, ev)
				last = n
			}
		}
	}()
	nem.Run(runCtx)
	<-done
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	nem.HealAll()
	h.Event("final heal")
	rep.Faults = nem.Counts
	rep.Anomalies = append(rep.Anomalies, nem.Anomalies...)
	logf("load stopped; healing")

	if l := c.WaitLeader(30 * time.Second); l == nil {
		rep.Anomalies = append(rep.Anomalies, "no leader 30 s after healing")
	}
	for _, n := range c.Members() {
		if err := c.WaitReady(n, 30*time.Second); err != nil {
			rep.Anomalies = append(rep.Anomalies, "after healing: "+err.Error())
		}
	}
	ops := h.Ops()
	for _, op := range ops {
		rep.Ops[op.Kind+"/"+op.Result]++
	}

	// (4) convergence; usage flushes settle within a few intervals.
	states, problems := Converge(c, 60*time.Second)
	if len(problems) == 0 {
		for _, st := range states {
			rep.Converged = fmt.Sprintf("all %d nodes at applied index %d, digest %s", len(states), st.AppliedIndex, st.Digest)
			break
		}
	} else {
		rep.Converged = "FAILED"
		rep.Anomalies = append(rep.Anomalies, problems...)
	}
	// Gossip merges again after every partition (memberlist reconnect).
	rep.Anomalies = append(rep.Anomalies, GossipHealed(c, 30*time.Second)...)
	// (2) no acknowledged write lost.
	n, anomalies := CheckDurable(c, ops)
	rep.DurableChecks = n
	rep.Anomalies = append(rep.Anomalies, anomalies...)
	// (3) revocation bound.
	n, anomalies = CheckRevocationBound(ops, cfg.MaxStale+cfg.Election)
	rep.BoundChecks = n
	rep.Anomalies = append(rep.Anomalies, anomalies...)
	rep.RYWChecks, anomalies = CheckReadYourWrites(ops)
	rep.Anomalies = append(rep.Anomalies, anomalies...)
	// No plaintext token in any data dir, snapshot or log.
	rep.PlaintextFiles, anomalies = CheckPlaintextAtRest(c, ops)
	rep.Anomalies = append(rep.Anomalies, anomalies...)
	// (1) linearizability.
	rep.AdminChecked = len(Porcupine(ops))
	viz := filepath.Join(cfg.Dir, "linearizability.html")
	res, err := CheckLinearizable(ops, 5*time.Minute, viz)
	rep.Linearizable = string(res)
	switch {
	case err != nil:
		rep.Anomalies = append(rep.Anomalies, "porcupine visualisation: "+err.Error())
	case res == porcupine.Illegal:
		rep.Anomalies = append(rep.Anomalies, "linearizability: porcupine found no linearization; see "+viz)
	case res == porcupine.Unknown:
		// The histories porcupine cannot finish are those with the most
		// operations of unknown outcome, from the fault windows: the most
		// likely to hide a violation. Unchecked is not passed.
		rep.Anomalies = append(rep.Anomalies, "linearizability: porcupine timed out before deciding; see "+viz)
	}

	h.Save(filepath.Join(cfg.Dir, "history.json"))
	b, _ := json.MarshalIndent(rep, "", "  ")
	os.WriteFile(filepath.Join(cfg.Dir, "report.json"), b, 0o644)
	os.WriteFile(filepath.Join(cfg.Dir, "report.txt"), []byte(rep.String()+eventsText(h)), 0o644)
	return rep, nil
}

func eventsText(h *History) string {
	var b strings.Builder
	b.WriteString("\nnemesis timeline:\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.Events {
		fmt.Fprintf(&b, "  %s %s\n", ts(e.At), e.What)
	}
	return b.String()
}
