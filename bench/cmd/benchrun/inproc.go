package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// benchLine is one line of `go test -bench -benchmem` output.
type benchLine struct {
	name           string
	ns, bytes, all float64
	rest           string // the line after ns/op
}

var (
	heapRE   = regexp.MustCompile(`([\d.]+) B/key`)
	mappedRE = regexp.MustCompile(`([\d.]+) mapped-B/key`)
)

var benchRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)

func goBench(env []string, pkg, pattern string) []benchLine {
	return goBenchX(env, pkg, pattern, fmt.Sprintf("-benchtime=%dms", cfg.benchtimeMsec))
}

func goBenchX(env []string, pkg, pattern, benchtime string) []benchLine {
	args := []string{"go", "test", "-run", "^$", "-bench", pattern, "-benchmem", benchtime, "-timeout", "60m", pkg}
	command(append(env, args...)...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = cfg.repo
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("%s: %v\n%s", strings.Join(args, " "), err, out))
	}
	var res []benchLine
	for _, l := range strings.Split(string(out), "\n") {
		m := benchRE.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		bl := benchLine{name: m[1], rest: m[3]}
		bl.ns, _ = strconv.ParseFloat(m[2], 64)
		f := strings.Fields(m[3])
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseFloat(f[i-1], 64)
			switch f[i] {
			case "B/op":
				bl.bytes = v
			case "allocs/op":
				bl.all = v
			}
		}
		res = append(res, bl)
	}
	return res
}

// stepInProcess: the hot path's parts and the decision against its floor.
func stepInProcess() {
	lines := goBench([]string{"BENCH_SIZES=" + cfg.benchSizes, "BENCH_PAIRS=" + strconv.Itoa(cfg.pairs)}, "./bench",
		"^Benchmark(Pair|IndexLookup|ParseToken|SHA256)$")
	lines = append(lines, goBenchX([]string{"BENCH_SIZES=" + cfg.benchSizes}, "./bench", "^BenchmarkIndexHeap$", "-benchtime=1x")...)
	lines = append(lines, goBench(nil, "./api", "^BenchmarkVerifyHandler$")...)
	dec := map[string][]float64{}
	flo := map[string][]float64{}
	var sizes []string
	for _, l := range lines {
		parts := strings.Split(l.name, "/")
		switch parts[0] {
		case "BenchmarkParseToken":
			fig("inproc.parse_token.ns_op", l.ns)
			fig("inproc.parse_token.allocs_op", l.all)
		case "BenchmarkSHA256":
			fig("inproc.sha256.ns_op", l.ns)
		case "BenchmarkIndexHeap":
			if m := heapRE.FindStringSubmatch(l.rest); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				fig("inproc.index_heap_bytes_per_key."+parts[1], v)
			}
			if m := mappedRE.FindStringSubmatch(l.rest); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				fig("inproc.index_mapped_bytes_per_key."+parts[1], v)
			}
		case "BenchmarkIndexLookup":
			fig("inproc.index_lookup."+parts[1]+".ns_op", l.ns)
			fig("inproc.index_lookup."+parts[1]+".allocs_op", l.all)
		case "BenchmarkVerifyHandler":
			k := "inproc.handler_" + strings.ToLower(parts[1])
			fig(k+".ns_op", l.ns)
			fig(k+".allocs_op", l.all)
			fig(k+".bytes_op", l.bytes)
		case "BenchmarkPair":
			n := strings.TrimPrefix(parts[1], "n=")
			if _, ok := dec[n]; !ok && parts[3] == "decision" {
				sizes = append(sizes, n)
			}
			if parts[3] == "decision" {
				dec[n] = append(dec[n], l.ns)
				k := "inproc.decision." + n + ".allocs_op"
				R.Figures[k] = max(R.Figures[k], l.all)
				k = "inproc.decision." + n + ".bytes_op"
				R.Figures[k] = max(R.Figures[k], l.bytes)
			} else {
				flo[n] = append(flo[n], l.ns)
			}
		}
	}
	for _, n := range sizes {
		fig("inproc.decision."+n+".ns_op", round(median(dec[n]), 1))
		fig("inproc.floor."+n+".ns_op", round(median(flo[n]), 1))
		pairRatio("inproc.decision_over_floor."+n, dec[n], flo[n])
	}
}
