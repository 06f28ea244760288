package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// settledRSS is what the node holds once settled after an import, as the
// empty one was measured: an idle node gives the import's garbage back once
// no collection has run for 5 s (serve --gc-percent auto,
// cmd/keyraft/gctune.go), later if a snapshot taken after the import
// collected meanwhile. So after 8 s it reads VmRSS every second until three
// readings lie within 1 MiB, for at most 30 s.
func settledRSS(pid int) float64 {
	time.Sleep(8 * time.Second)
	var last []float64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		last = append(last, rssBytes(pid))
		if n := len(last); time.Now().After(deadline) ||
			n >= 3 && slices.Max(last[n-3:])-slices.Min(last[n-3:]) < 1<<20 {
			return last[n-1]
		}
	}
}

// stepScale: resident memory per key as the index grows (import), verify
// p99 on a small index against the largest one, and how long a new node
// takes to catch up with a node holding cfg.catchupKeys keys.
func stepScale() {
	// gctrace shows the live heap after each GC in the node's log: RSS
	// minus that is garbage and runtime overhead, not the index.
	s := startKeyraftEnv("scale", 1, []string{"GODEBUG=gctrace=1"})
	big := s.nodes[0]
	time.Sleep(2 * time.Second)
	rss0 := rssBytes(big.p.pid())
	fig("scale.rss_empty_mib", round(rss0/(1<<20), 1))

	// The large index is verified with as many keys as the small one holds
	// (cfg.p99Small, 90% of them valid), taken evenly from the whole
	// import, so that the two p99 runs differ in the index's size only.
	// With 100K targets against the small node's 10K, vegeta itself spent
	// a third more CPU on the large run (`perf sched`, 2026-12-06) on the
	// two cores it shares with the node, and the node's usage flushes
	// covered 2.5 times as many keys: the p99s differed by that as well.
	var sample []string // plaintexts of imported keys, for the verify targets
	stride := max(1, cfg.scaleSizes[len(cfg.scaleSizes)-1]/(cfg.p99Small*9/10))
	loaded := 0
	for _, target := range cfg.scaleSizes {
		t0 := time.Now()
		for loaded < target {
			chunk := min(100_000, target-loaded)
			toks := genTokens(chunk)
			s.importTokens(big, toks)
			for i, t := range toks {
				if (loaded+i)%stride == 0 && len(sample) < cfg.p99Small*9/10 {
					sample = append(sample, t.Plaintext)
				}
			}
			loaded += chunk
		}
		logf("scale: %d keys loaded (%.1f s)", loaded, time.Since(t0).Seconds())
		// From the previous size up to this one, through the API.
		fig(fmt.Sprintf("scale.import_s.%d", target), round(time.Since(t0).Seconds(), 1))
		rss := settledRSS(big.p.pid())
		fig(fmt.Sprintf("scale.rss_mib.%d", target), round(rss/(1<<20), 1))
		fig(fmt.Sprintf("scale.rss_bytes_per_key.%d", target), math.Round((rss-rss0)/float64(target)))
		fig(fmt.Sprintf("scale.rss_anon_mib.%d", target), round(procStatus(big.p.pid(), "RssAnon")/(1<<20), 1))
		fig(fmt.Sprintf("scale.rss_file_mib.%d", target), round(procStatus(big.p.pid(), "RssFile")/(1<<20), 1))
		if live := lastLiveHeap(big); live > 0 {
			fig(fmt.Sprintf("scale.gc_live_heap_mib.%d", target), live)
		}
		if target == cfg.catchupKeys {
			catchUp(s, big, target)
		}
	}

	// verify p99 on a small index against the largest, interleaved
	small := startKeyraft("small", 1)
	_, smallKeys := small.verifySet(small.nodes[0], cfg.p99Small)
	invalid := genTokens(len(sample) / 9)
	lines := append([]string(nil), sample...)
	for _, t := range invalid {
		lines = append(lines, t.Plaintext)
	}
	shuffle(lines)
	bigKeys := filepath.Join(cfg.work, "scale-keys.txt")
	must(os.WriteFile(bigKeys, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	rate := 5000
	if m := R.Figures["http.keyraft.rps"]; m > 0 {
		rate = int(m / 4)
	}
	st := vegetaTargets(smallKeys, small.nodes[0].http, "small")
	bt := vegetaTargets(bigKeys, big.http, "big")
	var sp, bp []float64
	for p := 0; p < cfg.noisyPairs; p++ {
		var a, b latencies
		if p%2 == 0 { // small then large, large then small: see http.go
			a = vegeta(st, rate, cfg.vegDur)
			b = vegeta(bt, rate, cfg.vegDur)
		} else {
			b = vegeta(bt, rate, cfg.vegDur)
			a = vegeta(st, rate, cfg.vegDur)
		}
		sp, bp = append(sp, a.p99), append(bp, b.p99)
		logf("p99 at %d/s pair %d: %d keys %.2f ms, %d keys %.2f ms", rate, p, cfg.p99Small, a.p99, loaded, b.p99)
	}
	fig("scale.p99.rate", float64(rate))
	fig(fmt.Sprintf("scale.p99_ms.%d", cfg.p99Small), round(median(sp), 3))
	fig(fmt.Sprintf("scale.p99_ms.%d", loaded), round(median(bp), 3))
	fig("scale.p99.large_keys", float64(loaded))
	pairRatio("scale.p99_large_over_small", bp, sp)
}

var gcLine = regexp.MustCompile(`(\d+)->(\d+)->(\d+) MB`)

// lastLiveHeap is the live heap after the last GC the node logged (MiB).
func lastLiveHeap(nd *node) float64 {
	b, err := os.ReadFile(filepath.Join(cfg.work, nd.id+".log"))
	if err != nil {
		return 0
	}
	m := gcLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[len(m)-1][3]), 64)
	return v
}

// catchUp starts a new node that joins c through nd and measures the time
// from its start until its applied index and state digest match nd's.
func catchUp(c *cluster, nd *node, keys int) {
	st, err := c.status(nd)
	must(err)
	var target uint64
	var digest string
	for _, n := range st.Nodes {
		if n.ID == nd.id && n.AppliedIndex != nil {
			target, digest = *n.AppliedIndex, n.Digest
		}
	}
	j := &node{id: "joiner", http: addr(freePort()), raft: addr(freePort()), gossip: addr(freePort())}
	t0 := time.Now()
	c.startNode(j, nil, "--join", nd.gossip)
	deadline := t0.Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		st, err := c.status(nd)
		if err == nil {
			for _, n := range st.Nodes {
				if n.ID == j.id && n.AppliedIndex != nil && *n.AppliedIndex >= target && n.Digest != "" {
					var leaderDigest string
					var leaderApplied uint64
					for _, m := range st.Nodes {
						if m.ID == nd.id && m.AppliedIndex != nil {
							leaderDigest, leaderApplied = m.Digest, *m.AppliedIndex
						}
					}
					if n.Digest == leaderDigest && *n.AppliedIndex == leaderApplied {
						secs := time.Since(t0).Seconds()
						fig(fmt.Sprintf("scale.catchup_s.%d", keys), round(secs, 2))
						logf("catch-up of %d keys: %.2f s (index %d, digest %s; was %d %s)", keys, secs, *n.AppliedIndex, n.Digest, target, digest)
						// Removed, then stopped (a stop alone could leave a
						// 2-voter cluster without quorum): the rest of the step
						// measures one node, as the 10K-key node it is compared
						// with is, not one replicating to a second on the same
						// cores (the joiner's own applies and snapshots of the
						// next 9M keys had landed in the 10M p99 runs).
						if _, err := c.call(nd, "DELETE", "/v1/cluster/nodes/"+j.id, nil, nil); err != nil {
							panic(err)
						}
						j.p.stop()
						return
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	panic("the new node did not catch up in 5 minutes")
}
