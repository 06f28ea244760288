// Command chaos runs keyraft's fault-injection harness (see docs/chaos.md).
// It needs root: it creates network namespaces, a bridge and iptables rules.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/keyraft/keyraft/chaos"
)

func main() {
	short := flag.Bool("short", false, "CI mode: 3 nodes, about 3 minutes in total")
	seed := flag.Int64("seed", 0, "random seed (0: from the clock)")
	duration := flag.Duration("duration", 10*time.Minute, "how long faults and load run (long mode)")
	nodes := flag.Int("nodes", 0, "nodes (default 3 with --short, 5 otherwise)")
	clients := flag.Int("clients", 4, "concurrent clients")
	bin := flag.String("bin", "", "keyraft binary")
	dir := flag.String("dir", "", "run folder (default: a new folder under the temp dir)")
	keep := flag.Bool("keep", false, "keep the run folder on success")
	maxStale := flag.Duration("max-stale", time.Second, "--max-stale of the nodes")
	election := flag.Duration("election-timeout", 300*time.Millisecond, "--election-timeout and --heartbeat-timeout of the nodes")
	noMembership := flag.Bool("no-membership", false, "leave out membership changes")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: needs root (network namespaces, veth, bridge and iptables); run it as root")
		os.Exit(2)
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "chaos: --bin (the keyraft binary) is required")
		os.Exit(2)
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000
	}
	if *nodes == 0 {
		*nodes = 5
		if *short {
			*nodes = 3
		}
	}
	if *short {
		*duration = 110 * time.Second
	}
	if *dir == "" {
		*dir = filepath.Join(os.TempDir(), fmt.Sprintf("keyraft-chaos-%d-%s", *seed, time.Now().Format("20060102-150405")))
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	absBin, _ := filepath.Abs(*bin)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Printf("%s chaos: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	logf("seed %d, %d nodes, %d clients, duration %v, folder %s", *seed, *nodes, *clients, *duration, *dir)
	rep, err := chaos.Run(ctx, chaos.Config{
		Bin: absBin, Nodes: *nodes, Clients: *clients, Duration: *duration, Seed: *seed, Dir: *dir,
		MaxStale: *maxStale, Election: *election, Membership: !*noMembership, Keep: *keep, Log: logf,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: run failed: %v\nnode logs and whatever was recorded: %s\n", err, *dir)
		os.Exit(1)
	}
	fmt.Print(rep.String())
	if len(rep.Anomalies) > 0 {
		fmt.Printf("FAIL: history, node logs, porcupine visualisation and report in %s\n", *dir)
		os.Exit(1)
	}
	if *keep {
		fmt.Printf("PASS: run folder kept in %s\n", *dir)
	} else {
		os.RemoveAll(*dir)
		fmt.Println("PASS")
	}
}
