package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keyraft/keyraft/api"
	"github.com/keyraft/keyraft/cluster"
)

// serveConfig is every flag of `keyraft serve`.
type serveConfig struct {
	dataDir, httpAddr, raftAddr, nodeID, rootKeyFile, logLevel      string
	gossipAddr, join, gossipKey, gossipProfile, debugAddr           string
	bootstrapExpect, maxConnsPerIP, usageMaxKeys                    int
	gcPercent                                                       gcPercentFlag
	nonvoter, leaveOnTerminate                                      bool
	reapAfter, maxStale                                             time.Duration
	usageFlush, readTimeout, writeTimeout, idleTimeout              time.Duration
	shutdownTimeout                                                 time.Duration
	heartbeat, election, commit, snapshotInterval                   time.Duration
	snapshotThreshold, trailingLogs, snapshotLogMiB, trailingLogMiB uint64
}

// serveFlags defines the flags; each also reads KEYRAFT_<NAME> from the
// environment (dashes become underscores), and a flag on the command line wins.
func serveFlags(fs *flag.FlagSet) *serveConfig {
	c := &serveConfig{}
	fs.StringVar(&c.dataDir, "data-dir", "./keyraft-data", "directory for the Raft log, snapshots and node id")
	fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8080", "address of the HTTP API")
	fs.StringVar(&c.raftAddr, "raft-addr", "127.0.0.1:7000", "address of the Raft transport (bound and advertised)")
	fs.StringVar(&c.gossipAddr, "gossip-addr", "127.0.0.1:7946", "memberlist address (UDP and TCP), bound and advertised")
	fs.StringVar(&c.join, "join", "", "comma-separated gossip addresses of running nodes; retried until one answers")
	fs.StringVar(&c.gossipKey, "gossip-key", "", "base64 key of 16, 24 or 32 bytes that encrypts gossip; nodes without it cannot join")
	fs.StringVar(&c.gossipProfile, "gossip-profile", "lan", "memberlist timing: lan, local (fast failure detection, for one machine) or wan")
	fs.IntVar(&c.bootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many voters started with the same value see each other")
	fs.BoolVar(&c.nonvoter, "nonvoter", false, "join as a read replica: replicates and verifies, never votes")
	fs.DurationVar(&c.reapAfter, "reap-after", 72*time.Hour, "remove a member dead this long from Raft (never when that would lose quorum)")
	fs.DurationVar(&c.maxStale, "max-stale", 0, "answer verify with 503 STALE unless caught up with a quorum-confirmed leader within this long (0 = always answer from local state)")
	fs.BoolVar(&c.leaveOnTerminate, "leave-on-terminate", false, "make SIGTERM a permanent leave of the cluster")
	fs.StringVar(&c.nodeID, "node-id", "", "node id (default: the one stored in the data dir, or a new random one)")
	fs.StringVar(&c.rootKeyFile, "root-key-file", "", "file holding the root admin key (rk_…) a new cluster is created with; default: generate one and print it once")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.DurationVar(&c.usageFlush, "usage-flush-interval", 5*time.Second, "how often verification usage (last_used_at, counts) is written through Raft")
	fs.IntVar(&c.usageMaxKeys, "usage-max-keys-per-sec", 10_000, "most keys a second, on average, this node's usage flushes write through Raft: a larger flush delays the next beyond the interval (0 = no bound)")
	fs.DurationVar(&c.readTimeout, "read-timeout", 10*time.Second, "time to read a whole request")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "time to write a response")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 60*time.Second, "keep-alive connections idle longer are closed")
	// A write in flight waits for its commit (seconds at worst), a backup
	// download for its client: the bound keeps a slow client from holding
	// a restart up.
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long requests in flight may take to finish before they are cut off (a second signal stops waiting)")
	fs.IntVar(&c.maxConnsPerIP, "max-conns-per-ip", api.DefaultMaxConnsPerIP, "open HTTP connections allowed from one client address; more are answered 429 and closed (-1 = no limit)")
	fs.DurationVar(&c.heartbeat, "heartbeat-timeout", time.Second, "Raft heartbeat timeout")
	fs.DurationVar(&c.election, "election-timeout", time.Second, "Raft election timeout")
	fs.DurationVar(&c.commit, "commit-timeout", 10*time.Millisecond, "longest time before followers learn of a commit on an idle cluster")
	fs.DurationVar(&c.snapshotInterval, "snapshot-interval", 2*time.Minute, "how often Raft checks whether to snapshot")
	fs.Uint64Var(&c.snapshotThreshold, "snapshot-threshold", 8192, "log entries since the last snapshot that trigger a new one")
	fs.Uint64Var(&c.trailingLogs, "trailing-logs", 10240, "log entries kept after a snapshot, for followers to catch up from")
	fs.Uint64Var(&c.snapshotLogMiB, "snapshot-log-mib", 64, "MiB of log since the last snapshot that trigger a new one (large imports reach it long before --snapshot-threshold)")
	fs.Uint64Var(&c.trailingLogMiB, "trailing-log-mib", 16, "after a snapshot by log size, keep about this many MiB of log (at most --trailing-logs entries)")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "serve Go's profiling endpoints (/debug/pprof/) on this address, apart from the API; unauthenticated: keep it on loopback (default off)")
	c.gcPercent = gcPercentFlag{auto: true}
	fs.Var(&c.gcPercent, "gc-percent", "the Go garbage collector's target (GOGC): auto follows the live heap (room for at least 32 MiB of allocation between collections and at least 25%, at most 100%), a number fixes it, -1 keeps the runtime's (GOGC from the environment)")
	return c
}

// decodeGossipKey checks --gossip-key: base64 of 16, 24 or 32 bytes (AES).
func decodeGossipKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key: not base64: %w", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("--gossip-key: %d bytes; want 16, 24 or 32", n)
	}
	return key, nil
}

// advertisedHTTP is the API address peers forward to: the listener's, or,
// when it listens on all interfaces, the Raft host with the API port.
func advertisedHTTP(ln *net.TCPAddr, raftAddr string) string {
	if !ln.IP.IsUnspecified() {
		return ln.String()
	}
	host, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return ln.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(ln.Port))
}

// envName is the environment variable of a flag: data-dir → KEYRAFT_DATA_DIR.
func envName(flagName string) string {
	return "KEYRAFT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseWithEnv applies KEYRAFT_* variables, then the command line.
func parseWithEnv(fs *flag.FlagSet, args []string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && err == nil {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}

func runServe(args []string) int {
	fs := flag.NewFlagSet("keyraft serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: keyraft serve [flags]\n\nEvery flag can also be set as KEYRAFT_<FLAG> (e.g. KEYRAFT_DATA_DIR).\n\n")
		fs.PrintDefaults()
	}
	if err := parseWithEnv(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "keyraft serve:", err)
		return 2
	}
	stopGCTuning := make(chan struct{})
	defer close(stopGCTuning)
	cfg.gcPercent.apply(stopGCTuning)
	if err := serve(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "keyraft serve:", err)
		return 1
	}
	return 0
}

func serve(cfg *serveConfig) error {
	level := hclog.LevelFromString(cfg.logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("--log-level: %q is not one of trace, debug, info, warn or error", cfg.logLevel)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "keyraft", Level: level, Output: os.Stderr})
	var rootToken string
	if cfg.rootKeyFile != "" {
		b, err := os.ReadFile(cfg.rootKeyFile)
		if err != nil {
			return fmt.Errorf("reading the root key file: %w", err)
		}
		rootToken = strings.TrimSpace(string(b))
	}
	gossipKey, err := decodeGossipKey(cfg.gossipKey)
	if err != nil {
		return err
	}
	if cfg.shutdownTimeout < 0 {
		return fmt.Errorf("--shutdown-timeout: %s is negative", cfg.shutdownTimeout)
	}
	if cfg.usageMaxKeys < 0 {
		return fmt.Errorf("--usage-max-keys-per-sec: %d is negative (0 = no bound)", cfg.usageMaxKeys)
	}
	var join []string
	for _, j := range strings.Split(cfg.join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			join = append(join, j)
		}
	}
	if cfg.debugAddr != "" {
		dl, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			return err
		}
		defer dl.Close()
	}
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.httpAddr, err)
	}
	node, err := cluster.Open(cluster.Config{
		NodeID: cfg.nodeID, DataDir: cfg.dataDir, RaftAddr: cfg.raftAddr,
		// Alone (no --join, no --bootstrap-expect): a cluster of one, as a
		// newcomer expects. Otherwise gossip forms or joins the cluster.
		Bootstrap:  len(join) == 0 && cfg.bootstrapExpect <= 1,
		HTTPAddr:   advertisedHTTP(ln.Addr().(*net.TCPAddr), cfg.raftAddr),
		GossipAddr: cfg.gossipAddr, GossipKey: gossipKey, GossipProfile: cfg.gossipProfile,
		Join: join, BootstrapExpect: cfg.bootstrapExpect, Nonvoter: cfg.nonvoter, ReapAfter: cfg.reapAfter,
		Version:          version,
		HeartbeatTimeout: cfg.heartbeat, ElectionTimeout: cfg.election, CommitTimeout: cfg.commit,
		SnapshotInterval: cfg.snapshotInterval, SnapshotThreshold: cfg.snapshotThreshold, TrailingLogs: cfg.trailingLogs,
		SnapshotLogBytes: cfg.snapshotLogMiB << 20, TrailingLogBytes: cfg.trailingLogMiB << 20,
		Logger: log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	err = node.StartHousekeeping(cluster.Housekeeping{
		RootToken:          rootToken,
		UsageFlushInterval: cfg.usageFlush,
		UsageMaxKeysPerSec: cfg.usageMaxKeys,
		// The root key goes to stdout once, on a line of its own, and nowhere else.
		AnnounceRootKey: func(plaintext string) { fmt.Printf("root key: %s\n", plaintext) },
	})
	if err != nil {
		ln.Close()
		node.Shutdown()
		return err
	}
	left := make(chan struct{})
	var leaveOnce sync.Once
	srv := api.New(node, api.Config{ReadTimeout: cfg.readTimeout, WriteTimeout: cfg.writeTimeout, IdleTimeout: cfg.idleTimeout,
		MaxStale: cfg.maxStale, MaxConnsPerIP: cfg.maxConnsPerIP, Logger: log,
		OnLeave: func() { leaveOnce.Do(func() { close(left) }) }})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "node_id", node.ID(), "http", ln.Addr().String(), "raft", node.RaftAddr(), "data_dir", cfg.dataDir)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var servedErr error
	select {
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
		if cfg.leaveOnTerminate {
			if err := node.Leave(10 * time.Second); err != nil {
				log.Warn("leaving the cluster", "error", err)
			}
		}
	case <-left:
		log.Info("left the cluster; shutting down")
	case err := <-served:
		// Not a requested stop: once the node is closed, exit with an error
		// so that a supervisor restarts it.
		servedErr = fmt.Errorf("the HTTP server stopped: %w", err)
	}
	// Stop taking requests and finish those in flight (their writes are
	// acknowledged only once committed), then hand over leadership and
	// close Raft and the stores. A slow client (a backup being streamed)
	// does not hold the node up for longer than --shutdown-timeout, and a
	// second signal stops waiting at once.
	drain, stopWaiting := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer stopWaiting()
	go func() {
		select {
		case sig := <-sigs:
			log.Warn("second signal: not waiting for the requests in flight", "signal", sig.String())
			stopWaiting()
		case <-drain.Done():
		}
	}()
	if err := srv.Shutdown(drain); err != nil {
		log.Warn("HTTP shutdown: requests still in flight are cut off", "error", err)
	}
	if err := node.Shutdown(); err != nil {
		return fmt.Errorf("closing the node: %w", err)
	}
	log.Info("stopped")
	return servedErr
}
