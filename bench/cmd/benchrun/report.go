package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// goals are the goals, judged on this run's figures. A goal whose
// figure this run did not produce is left out (not reported as a MISS).
func goals() []goal {
	var gs []goal
	add := func(name, figure, goalText string, v float64, ok bool, pass bool) {
		if ok {
			gs = append(gs, goal{Name: name, Figure: figure, Goal: goalText, Value: v, Pass: pass})
		}
	}
	for _, n := range strings.Split(cfg.benchSizes, ",") {
		r, ok := R.Ratios["inproc.decision_over_floor."+n]
		allocs := R.Figures["inproc.decision."+n+".allocs_op"]
		add("verify decision in-process, "+n+" keys", "ratios.inproc.decision_over_floor."+n+".median (allocs: figures.inproc.decision."+n+".allocs_op = "+fmtNum(allocs)+")",
			"≤ 1.5× floor, 0 allocs/op", r.Median, ok, r.Median <= 1.5 && allocs == 0)
	}
	if r, ok := R.Ratios["http.keyraft_over_floor"]; ok {
		add("HTTP verify vs fasthttp floor", "ratios.http.keyraft_over_floor.median", "≥ 0.9×", r.Median, true, r.Median >= 0.9)
	}
	if r, ok := R.Ratios["http.keyraft_over_redis"]; ok {
		add("HTTP verify vs Redis GET", "ratios.http.keyraft_over_redis.median", "≥ 1.0×", r.Median, true, r.Median >= 1.0)
	}
	if r, ok := R.Ratios["latency.80.p99_keyraft_over_floor"]; ok {
		add("p99 at 80% load vs floor", "ratios.latency.80.p99_keyraft_over_floor.median", "≤ 1.5×", r.Median, true, r.Median <= 1.5)
	}
	if r, ok := R.Ratios["writes.keyraft_over_etcd.c64"]; ok {
		add("key creates/s, 3 nodes, 64 clients vs etcd put", "ratios.writes.keyraft_over_etcd.c64.median", "≥ 1.0×", r.Median, true, r.Median >= 1.0)
	}
	if v, ok := R.Figures["revoke.all_nodes.p99_ms"]; ok {
		add("revocation visible on every node", "figures.revoke.all_nodes.p99_ms", "p99 ≤ 100 ms", v, true, v <= 100)
	}
	for _, n := range cfg.scaleSizes {
		k := fmt.Sprintf("scale.rss_bytes_per_key.%d", n)
		if v, ok := R.Figures[k]; ok && n >= 1_000_000 || ok && n == cfg.scaleSizes[len(cfg.scaleSizes)-1] {
			name := fmt.Sprintf("memory per key at %d keys", n)
			if n < 1_000_000 {
				name += " (goal stated at 1M and 10M)"
			}
			add(name, "figures."+k, "≤ 200 bytes", v, true, v <= 200)
		}
	}
	if r, ok := R.Ratios["scale.p99_large_over_small"]; ok {
		large := int(R.Figures["scale.p99.large_keys"])
		name := fmt.Sprintf("verify p99 at %d keys vs %d keys", large, cfg.p99Small)
		if large < 10_000_000 {
			name += " (goal stated at 10M)"
		}
		add(name, "ratios.scale.p99_large_over_small.median", "≤ 1.2×", r.Median, true, r.Median <= 1.2)
	}
	k := fmt.Sprintf("scale.catchup_s.%d", cfg.catchupKeys)
	if v, ok := R.Figures[k]; ok {
		name := fmt.Sprintf("catch-up of a new node, %d keys", cfg.catchupKeys)
		if cfg.catchupKeys < 1_000_000 {
			name += " (goal stated at 1M)"
		}
		add(name, "figures."+k, "≤ 10 s", v, true, v <= 10)
	}
	return gs
}

func fmtNum(v float64) string {
	if v == float64(int64(v)) && (v >= 1e6 || v <= -1e6 || v == 0 || v >= 1 || v <= -1) {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// markdown renders the run as the tables bench/README.md shows.
func markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "date %s · mode %s · %s, %d cores, %d GiB · %s · %s · %.0f s\n\n", R.Date, R.Mode, R.Machine.CPU, R.Machine.Cores, R.Machine.MemGiB, R.Machine.Kernel, R.Go, R.Seconds)
	b.WriteString("| goal | figure | value | goal | result |\n|---|---|---|---|---|\n")
	for _, g := range R.Goals {
		res := "MISS"
		if g.Pass {
			res = "PASS"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s |\n", g.Name, g.Figure, fmtNum(g.Value), g.Goal, res)
	}
	b.WriteString("\n| ratio (interleaved pairs) | median | min | max |\n|---|---|---|---|\n")
	for _, k := range sortedKeys(R.Ratios) {
		r := R.Ratios[k]
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", k, fmtNum(r.Median), fmtNum(r.Min), fmtNum(r.Max))
	}
	b.WriteString("\n| figure | value |\n|---|---|\n")
	for _, k := range sortedKeys(R.Figures) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, fmtNum(R.Figures[k]))
	}
	if len(R.Notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range R.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// printTable prints the table and writes it beside the JSON results.
func printTable() {
	md := markdown()
	fmt.Print(md)
	must(os.MkdirAll(filepath.Dir(cfg.out), 0o755))
	must(os.WriteFile(strings.TrimSuffix(cfg.out, filepath.Ext(cfg.out))+".md", []byte(md), 0o644))
}
