// Command benchrun runs keyraft's benchmark suite (issue "keyraft
// performance") on loopback and writes bench/results/latest.json. It is
// started by scripts/bench.sh, which installs wrk, redis-server, etcd and
// vegeta and builds the binaries it drives:
//
//	go run ./bench/cmd/benchrun --keyraft BIN --floor BIN --vegeta BIN [--quick|--long]
//
// Every comparison is measured in the same run, interleaved A B A B, and
// reported as the median of the per-pair ratios with their min and max.
// See bench/README.md for what each figure means.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

type config struct {
	mode                   string // quick, full or long
	keyraft, floor, vegeta string // binaries
	out, work, repo        string
	steps                  map[string]bool
	pairs                  int
	// noisyPairs is the number of interleaved pairs of the comparisons
	// whose single runs swing most on a shared 2-core machine: the
	// closed-loop HTTP runs (one 8 s run of a server came out a third off
	// the next) and the scale step's p99 runs (pairs 0.88-2.17x in one
	// step). More of them, and shorter ones, in alternating order.
	noisyPairs                int
	wrkDur, vegDur, writeDur  time.Duration
	benchSizes                string
	scaleSizes                []int
	catchupKeys               int
	httpKeys                  int // size of the verify key set (90% valid)
	vegTargets                int // vegeta targets taken from the key set (0: all)
	conns                     int
	revocations               int
	writeClients              []int
	p99Small                  int
	keepWork                  bool
	wrkThreads, benchtimeMsec int
}

// ratio is the median of per-pair ratios with their range.
type ratio struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

type goal struct {
	Name   string  `json:"name"`
	Figure string  `json:"figure"`
	Goal   string  `json:"goal"`
	Value  float64 `json:"value"`
	Pass   bool    `json:"pass"`
}

type machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	MemGiB int    `json:"mem_gib"`
	Kernel string `json:"kernel"`
}

type result struct {
	Date     string             `json:"date"`
	Mode     string             `json:"mode"`
	Machine  machine            `json:"machine"`
	Go       string             `json:"go"`
	Commands []string           `json:"commands"`
	Figures  map[string]float64 `json:"figures"`
	Ratios   map[string]ratio   `json:"ratios"`
	Goals    []goal             `json:"goals"`
	Notes    []string           `json:"notes"`
	Seconds  float64            `json:"seconds"`
}

// R is the run's state: everything measured so far.
var R = result{Figures: map[string]float64{}, Ratios: map[string]ratio{}}

var cfg config

func main() {
	quick := flag.Bool("quick", false, "small sizes and short runs: the whole suite in under 3 minutes")
	long := flag.Bool("long", false, "large sizes (10M keys) and longer runs")
	flag.StringVar(&cfg.keyraft, "keyraft", "", "keyraft binary (go build -o X ./cmd/keyraft)")
	flag.StringVar(&cfg.floor, "floor", "", "httpfloor binary (go build -o X ./bench/cmd/httpfloor)")
	flag.StringVar(&cfg.vegeta, "vegeta", "vegeta", "vegeta binary")
	flag.StringVar(&cfg.out, "out", "bench/results/latest.json", "where to write the results")
	flag.StringVar(&cfg.repo, "repo", ".", "repository root (for go test)")
	only := flag.String("only", "", "comma-separated steps to run (inproc,http,revoke,writes,scale; http includes the open-loop latency); default all")
	flag.BoolVar(&cfg.keepWork, "keep", false, "keep the work directory (data dirs, logs)")
	flag.Parse()
	start := time.Now()

	cfg.mode = "full"
	cfg.pairs = 3
	cfg.conns, cfg.wrkThreads = 32, 1
	cfg.httpKeys = 100_000
	cfg.revocations = 200
	cfg.writeClients = []int{1, 16, 64}
	cfg.p99Small = 10_000
	switch {
	case *quick:
		cfg.mode = "quick"
		cfg.wrkDur, cfg.vegDur, cfg.writeDur, cfg.noisyPairs = 2*time.Second, time.Second, time.Second, 3
		cfg.benchSizes, cfg.benchtimeMsec = "1000,100000", 100
		cfg.scaleSizes, cfg.catchupKeys = []int{100_000}, 100_000
		cfg.vegTargets = 20_000
	case *long:
		cfg.mode = "long"
		cfg.wrkDur, cfg.vegDur, cfg.writeDur, cfg.noisyPairs = 8*time.Second, 10*time.Second, 5*time.Second, 6
		cfg.benchSizes, cfg.benchtimeMsec = "1000,1000000,10000000", 1000
		cfg.scaleSizes, cfg.catchupKeys = []int{100_000, 1_000_000, 10_000_000}, 1_000_000
	default:
		cfg.wrkDur, cfg.vegDur, cfg.writeDur, cfg.noisyPairs = 4*time.Second, 5*time.Second, 3*time.Second, 6
		cfg.benchSizes, cfg.benchtimeMsec = "1000,1000000", 500
		cfg.scaleSizes, cfg.catchupKeys = []int{100_000, 1_000_000}, 1_000_000
	}
	R.Mode = cfg.mode
	cfg.steps = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.steps[s] = true
		}
	}
	var err error
	cfg.work, err = os.MkdirTemp("", "keyraft-bench-")
	must(err)
	if !cfg.keepWork {
		defer os.RemoveAll(cfg.work)
	} else {
		fmt.Fprintln(os.Stderr, "work dir:", cfg.work)
	}
	defer stopAll()
	R.Date = start.UTC().Format(time.RFC3339)
	R.Machine = describeMachine()
	R.Go = runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		R.Go = strings.TrimSpace(string(out))
	}
	note("load generators and servers share the same %d cores on loopback; only the HTTP step's split runs pin them", R.Machine.Cores)

	steps := []struct {
		name string
		fn   func()
	}{
		{"inproc", stepInProcess},
		{"http", stepHTTP},
		{"revoke", stepRevocation},
		{"writes", stepWrites},
		{"scale", stepScale},
	}
	for _, s := range steps {
		if len(cfg.steps) > 0 && !cfg.steps[s.name] {
			continue
		}
		t := time.Now()
		logf("== %s", s.name)
		func() {
			defer func() {
				if r := recover(); r != nil {
					note("step %s failed: %v", s.name, r)
					logf("step %s FAILED: %v", s.name, r)
				}
				stopAll()
			}()
			s.fn()
		}()
		R.Figures["step_seconds."+s.name] = round(time.Since(t).Seconds(), 1)
	}
	R.Goals = goals()
	R.Seconds = round(time.Since(start).Seconds(), 1)
	printTable()
	must(os.MkdirAll(filepath.Dir(cfg.out), 0o755))
	b, err := json.MarshalIndent(&R, "", "  ")
	must(err)
	must(os.WriteFile(cfg.out, append(b, '\n'), 0o644))
	logf("wrote %s (%.0f s)", cfg.out, R.Seconds)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func note(format string, a ...any) { R.Notes = append(R.Notes, fmt.Sprintf(format, a...)) }

func fig(name string, v float64) { R.Figures[name] = v }

// command records a command line the run executed (for latest.json).
func command(args ...string) {
	R.Commands = append(R.Commands, strings.Join(args, " "))
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	if v < 0 {
		return -round(-v, digits)
	}
	return float64(int64(v*p+0.5)) / p
}

// pairRatio records the median, min and max of a/b over interleaved pairs.
func pairRatio(name string, a, b []float64) {
	if len(a) == 0 || len(a) != len(b) {
		return
	}
	rs := make([]float64, len(a))
	for i := range a {
		if b[i] == 0 {
			return
		}
		rs[i] = a[i] / b[i]
	}
	sort.Float64s(rs)
	R.Ratios[name] = ratio{Median: round(median(rs), 3), Min: round(rs[0], 3), Max: round(rs[len(rs)-1], 3)}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPU = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		m.MemGiB = (kb + 512*1024) / (1024 * 1024)
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}
