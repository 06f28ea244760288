package main

// Cluster operations of the command-line client (spec §5, §6):
// `keyraft cluster status|remove|leave` and `keyraft snapshot save|restore`
// are clients of the HTTP API; `keyraft recover` works offline on a stopped
// node's data dir.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keyraft/keyraft/cluster"
)

const clusterUsage = `usage: keyraft cluster <command> [flags]

commands:
  status            the leader, term and commit index, and every node: raft and
                    http address, suffrage, raft state, gossip state, applied
                    index and state digest
  remove NODE_ID    remove a node from Raft and the gossip ring
  leave             make the node at --addr leave the cluster for good (it
                    hands leadership over, is removed, then shuts down)

common flags (before or after the arguments):
  --addr URL        server address (env KEYRAFT_ADDR, default http://127.0.0.1:8080)
  --token TOKEN     root admin key (env KEYRAFT_TOKEN)
  --json            print the answer's data as JSON instead of a table
  --request-id ID   send X-Request-Id: ID
`

const snapshotUsage = `usage: keyraft snapshot <command> FILE|- [flags]

commands:
  save FILE|-       download a consistent backup of the cluster's state from
                    the leader to FILE (written to FILE.tmp, then renamed);
                    "-" writes it to stdout
  restore FILE|-    replace the cluster's whole state with a backup; "-" reads
                    it from stdin

common flags (before or after the arguments):
  --addr URL        server address (env KEYRAFT_ADDR, default http://127.0.0.1:8080)
  --token TOKEN     root admin key (env KEYRAFT_TOKEN)
  --json            print the result as JSON
  --request-id ID   send X-Request-Id: ID
`

const recoverUsage = `usage: keyraft recover --peers FILE --data-dir DIR

Lost-quorum recovery, offline: rewrites the Raft configuration stored in the
data dir of a STOPPED node to exactly the servers in the peers file. Run it
with the same file on every surviving node, then start them normally: they
elect a leader among themselves.

The peers file is a JSON array of the servers, by node id and Raft address:
  [{"id": "node-a", "address": "127.0.0.1:7000", "non_voter": false}, ...]

flags:
  --peers FILE      the peers file (required)
  --data-dir DIR    the node's data dir (env KEYRAFT_DATA_DIR; required)
`

// streamIdleTimeout aborts a snapshot transfer that makes no progress (no
// byte sent or received, no answer) for this long. Transfers have no overall
// time limit: a backup can be hundreds of MB.
var streamIdleTimeout = 5 * time.Minute

// recoverLockHint is how long `keyraft recover` waits before saying that the
// node may still be running (it then holds the lock on the Raft log).
var recoverLockHint = 5 * time.Second

// runCluster runs `keyraft cluster …` on the process's streams and environment.
func runCluster(args []string) int { return clusterCmd(args, osEnv()) }

// runSnapshot runs `keyraft snapshot …` on the process's streams and environment.
func runSnapshot(args []string) int { return snapshotCmd(args, osEnv()) }

// runRecover runs `keyraft recover …` on the process's streams and environment.
func runRecover(args []string) int { return recoverCmd(args, osEnv()) }

// clusterCmd dispatches `keyraft cluster <command>`.
func clusterCmd(args []string, e cliEnv) int {
	return dispatch("cluster", clusterUsage, []command{
		{[]string{"status"}, clusterStatusCmd},
		{[]string{"remove", "rm"}, clusterRemoveCmd},
		{[]string{"leave"}, clusterLeaveCmd},
	}, args, e)
}

// snapshotCmd dispatches `keyraft snapshot <command>`.
func snapshotCmd(args []string, e cliEnv) int {
	return dispatch("snapshot", snapshotUsage, []command{
		{[]string{"save"}, snapshotSaveCmd},
		{[]string{"restore"}, snapshotRestoreCmd},
	}, args, e)
}

// ---------------------------------------------------------------------------
// cluster status | remove | leave

// clusterStatusData is the data of GET /v1/cluster.
type clusterStatusData struct {
	LeaderID       string            `json:"leader_id"`
	LeaderRaftAddr string            `json:"leader_raft_addr"`
	Term           uint64            `json:"term"`
	CommitIndex    uint64            `json:"commit_index"`
	VotesWithheld  bool              `json:"votes_withheld"`
	Nodes          []clusterNodeData `json:"nodes"`
}

type clusterNodeData struct {
	ID           string  `json:"id"`
	RaftAddr     string  `json:"raft_addr"`
	HTTPAddr     string  `json:"http_addr"`
	Suffrage     string  `json:"suffrage"`
	RaftState    string  `json:"raft_state"`
	Gossip       string  `json:"gossip"`
	Version      string  `json:"version"`
	AppliedIndex *uint64 `json:"applied_index"`
	Digest       string  `json:"digest"`
	Error        string  `json:"error"`
}

func clusterStatusCmd(args []string, e cliEnv) int {
	c := newCmdFlags("cluster status", "[flags]", true)
	if _, code, done := c.parse(args, e, 0, 0); done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodGet, "/v1/cluster", nil, nil, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, r.Data)
	}
	var st clusterStatusData
	if err := json.Unmarshal(r.Data, &st); err != nil || len(r.Data) == 0 || string(r.Data) == "null" {
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server: %s", snippet(r.Data)))
	}
	printClusterStatus(e, &st)
	return 0
}

// printClusterStatus prints the status header line and the node table; a
// node the server could not ask for its state is noted on stderr.
func printClusterStatus(e cliEnv, st *clusterStatusData) {
	fmt.Fprintf(e.Stdout, "leader: %s  term: %d  commit index: %d\n", dash(st.LeaderID), st.Term, st.CommitIndex)
	if st.VotesWithheld {
		fmt.Fprintln(e.Stdout, "this node withholds its vote: it started without raft state and has not caught up with a leader yet")
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT\tHTTP\tSUFFRAGE\tSTATE\tGOSSIP\tAPPLIED\tDIGEST")
	for _, n := range st.Nodes {
		applied := "-"
		if n.AppliedIndex != nil {
			applied = strconv.FormatUint(*n.AppliedIndex, 10)
		}
		digest := n.Digest
		if r := []rune(digest); len(r) > 12 {
			digest = string(r[:12])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(n.ID), dash(n.RaftAddr), dash(n.HTTPAddr), dash(n.Suffrage),
			dash(n.RaftState), dash(n.Gossip), applied, dash(digest))
	}
	tw.Flush()
	for _, n := range st.Nodes {
		if n.Error != "" {
			fmt.Fprintf(e.Stderr, "keyraft: note: node %s: %s\n", dash(n.ID), clean(n.Error))
		}
	}
}

// dash is a table cell for a string: "-" when empty, cleaned otherwise.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

func clusterRemoveCmd(args []string, e cliEnv) int {
	c := newCmdFlags("cluster remove", "NODE_ID [flags]", true)
	id, code, done := c.oneArg(args, e, "node id")
	if done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	if _, err := cl.call(http.MethodDelete, "/v1/cluster/nodes/"+url.PathEscape(id), nil, nil, true); err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, mustJSON(map[string]any{"id": id, "removed": true}))
	}
	fmt.Fprintf(e.Stdout, "removed %s\n", clean(id))
	return 0
}

func clusterLeaveCmd(args []string, e cliEnv) int {
	c := newCmdFlags("cluster leave", "[flags]", true)
	if _, code, done := c.parse(args, e, 0, 0); done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, "/v1/cluster/leave", nil, nil, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, r.Data)
	}
	var res struct {
		Left string `json:"left"`
	}
	if err := json.Unmarshal(r.Data, &res); err != nil || res.Left == "" {
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server: %s", snippet(r.Data)))
	}
	fmt.Fprintf(e.Stdout, "%s left the cluster\n", clean(res.Left))
	return 0
}

// ---------------------------------------------------------------------------
// snapshot save | restore

// streamHTTP is the client's HTTP client without the overall time limit, for
// transfers of any size; an idleWatch bounds them instead.
func (c *client) streamHTTP() *http.Client {
	return &http.Client{Transport: c.http.Transport, CheckRedirect: c.http.CheckRedirect, Jar: c.http.Jar}
}

// errStalled is the cause of a transfer cancelled by its idleWatch.
var errStalled = errors.New("stalled")

// idleWatch cancels a transfer's context when no byte has moved for a while.
type idleWatch struct {
	last   atomic.Int64 // unix nanoseconds of the last progress
	idle   time.Duration
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// watchIdle starts watching; the caller must call stop.
func watchIdle(cancel context.CancelCauseFunc, idle time.Duration) *idleWatch {
	w := &idleWatch{idle: idle, cancel: cancel, done: make(chan struct{})}
	w.kick()
	tick := max(idle/10, 10*time.Millisecond)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
				if time.Since(time.Unix(0, w.last.Load())) > w.idle {
					w.cancel(errStalled)
					return
				}
			}
		}
	}()
	return w
}

func (w *idleWatch) kick() { w.last.Store(time.Now().UnixNano()) }
func (w *idleWatch) stop() { close(w.done) }

// reader wraps r so every read that moves bytes counts as progress. Its
// errors are kept apart from the writer's, to say which side failed.
func (w *idleWatch) reader(r io.Reader) *watchedReader { return &watchedReader{r: r, w: w} }

type watchedReader struct {
	r   io.Reader
	w   *idleWatch
	err error // the first error other than io.EOF
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.w.kick()
	}
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// streamError explains a failed transfer, naming a stall as such.
func streamError(ctx context.Context, what string, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		return fmt.Errorf("%s: no progress for %s; giving up", what, streamIdleTimeout)
	}
	return fmt.Errorf("%s: %w", what, unwrapURLError(err))
}

func snapshotSaveCmd(args []string, e cliEnv) int {
	c := newCmdFlags("snapshot save", "FILE|- [flags]", true)
	file, code, done := c.oneArg(args, e, "file name")
	if done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	watch := watchIdle(cancel, streamIdleTimeout)
	defer watch.stop()
	const path = "/v1/cluster/snapshot"
	req, err := cl.newRequest(ctx, http.MethodGet, path, nil, nil, "", true)
	if err != nil {
		return report(e.Stderr, err)
	}
	req.Header.Set("Accept", "application/octet-stream, application/json")
	res, err := cl.send(cl.streamHTTP(), req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errStalled) {
			return report(e.Stderr, streamError(ctx, "waiting for the snapshot", err))
		}
		return report(e.Stderr, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		_, err := readAnswer(http.MethodGet, path, res, true) // the error envelope
		return report(e.Stderr, err)
	}
	defer res.Body.Close()
	body := watch.reader(res.Body)
	var n int64
	if file == "-" {
		n, err = io.Copy(e.Stdout, body)
		if err != nil && body.err == nil {
			err = fmt.Errorf("writing the snapshot to stdout: %w", err)
		}
	} else {
		n, err = writeFileAtomic(file, body)
	}
	if body.err != nil {
		return report(e.Stderr, streamError(ctx, "reading the snapshot from the server", body.err))
	}
	if err != nil {
		return report(e.Stderr, err)
	}
	index := res.Header.Get("Keyraft-Index")
	if _, perr := strconv.ParseUint(index, 10, 64); perr != nil {
		index = ""
	}
	// With "-" the snapshot is on stdout: the summary goes to stderr.
	out, dest := e, file
	if file == "-" {
		out.Stdout, dest = e.Stderr, "stdout"
	}
	if c.json {
		var idx any // null when the server sent no index
		if index != "" {
			idx = json.Number(index)
		}
		return printJSON(out, mustJSON(map[string]any{"file": file, "index": idx, "bytes": n}))
	}
	if index == "" {
		fmt.Fprintf(out.Stdout, "saved snapshot (%d bytes) to %s\n", n, clean(dest))
	} else {
		fmt.Fprintf(out.Stdout, "saved snapshot at index %s (%d bytes) to %s\n", index, n, clean(dest))
	}
	return 0
}

// writeFileAtomic writes r to path through path+".tmp" (synced, then renamed
// over path), so path is never a partial snapshot; the temporary file is
// removed on any error. An empty stream is refused. A read error is returned
// as it is (r.err says it was one).
func writeFileAtomic(path string, r *watchedReader) (n int64, err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if n, err = io.Copy(f, r); err != nil {
		if r.err != nil {
			return n, r.err
		}
		return n, fmt.Errorf("writing %s: %w", tmp, unwrapPathError(err))
	}
	if n == 0 {
		return 0, errors.New("the server sent an empty snapshot")
	}
	if err = f.Sync(); err == nil {
		err = f.Close()
	}
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", tmp, unwrapPathError(err))
	}
	return n, os.Rename(tmp, path)
}

// unwrapPathError drops the path of an *fs.PathError (the caller names it).
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func snapshotRestoreCmd(args []string, e cliEnv) int {
	c := newCmdFlags("snapshot restore", "FILE|- [flags]", true)
	file, code, done := c.oneArg(args, e, "file name")
	if done {
		return code
	}
	var (
		src  io.Reader
		size int64 = -1 // unknown: sent chunked
	)
	if file == "-" {
		src = e.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintf(e.Stderr, "keyraft: %v\n", err)
			return 1
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			fmt.Fprintf(e.Stderr, "keyraft: %v\n", err)
			return 1
		}
		if st.IsDir() {
			fmt.Fprintf(e.Stderr, "keyraft: %s is a directory\n", file)
			return 1
		}
		if st.Mode().IsRegular() {
			if size = st.Size(); size == 0 {
				fmt.Fprintf(e.Stderr, "keyraft: %s is empty\n", file)
				return 1
			}
		}
		src = f
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	watch := watchIdle(cancel, streamIdleTimeout)
	defer watch.stop()
	const path = "/v1/cluster/restore"
	body := watch.reader(src)
	req, err := cl.newRequest(ctx, http.MethodPost, path, nil, body, "application/octet-stream", true)
	if err != nil {
		return report(e.Stderr, err)
	}
	req.ContentLength = size
	res, err := cl.send(cl.streamHTTP(), req)
	if err != nil {
		if body.err != nil {
			return report(e.Stderr, fmt.Errorf("reading %s: %w", file, unwrapPathError(body.err)))
		}
		if errors.Is(context.Cause(ctx), errStalled) {
			return report(e.Stderr, streamError(ctx, "restoring the snapshot", err))
		}
		return report(e.Stderr, err)
	}
	r, err := readAnswer(http.MethodPost, path, res, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, r.Data)
	}
	var ans struct {
		Restored bool  `json:"restored"`
		Keys     int64 `json:"keys"`
	}
	if err := json.Unmarshal(r.Data, &ans); err != nil || !ans.Restored {
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server: %s", snippet(r.Body)))
	}
	noun := "keys"
	if ans.Keys == 1 {
		noun = "key"
	}
	fmt.Fprintf(e.Stdout, "restored %d %s\n", ans.Keys, noun)
	return 0
}

// ---------------------------------------------------------------------------
// recover

// recoverCmd runs `keyraft recover --peers FILE --data-dir DIR`, offline.
func recoverCmd(args []string, e cliEnv) int {
	c := &cmdFlags{name: "recover", usageText: recoverUsage}
	c.fs = flag.NewFlagSet("recover", flag.ContinueOnError)
	peersFile := c.fs.String("peers", "", "the peers file (required)")
	dataDir := c.fs.String("data-dir", "", "the node's data dir (env KEYRAFT_DATA_DIR; required)")
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, recoverUsage)
		return 2
	}
	if _, code, done := c.parse(args, e, 0, 0); done {
		return code
	}
	if *dataDir == "" {
		*dataDir = e.Getenv("KEYRAFT_DATA_DIR")
	}
	switch {
	case *peersFile == "":
		return c.usageError(e, "--peers is required")
	case *dataDir == "":
		return c.usageError(e, "--data-dir (or KEYRAFT_DATA_DIR) is required")
	}
	raw, err := os.ReadFile(*peersFile)
	if err != nil {
		fmt.Fprintf(e.Stderr, "keyraft recover: reading the peers file: %v\n", err)
		return 1
	}
	var peers []cluster.Peer
	if err := json.Unmarshal(raw, &peers); err != nil {
		fmt.Fprintf(e.Stderr, "keyraft recover: %s: %v\n(want a JSON array like [{\"id\": \"node-a\", \"address\": \"127.0.0.1:7000\"}])\n", *peersFile, err)
		return 1
	}
	// Check the data dir here: opening the Raft log would create an empty one.
	if st, err := os.Stat(*dataDir); err != nil {
		fmt.Fprintf(e.Stderr, "keyraft recover: data dir: %v\n", err)
		return 1
	} else if !st.IsDir() {
		fmt.Fprintf(e.Stderr, "keyraft recover: data dir %s is not a directory\n", *dataDir)
		return 1
	}
	if _, err := os.Stat(filepath.Join(*dataDir, "raft.db")); err != nil {
		fmt.Fprintf(e.Stderr, "keyraft recover: %s holds no raft log (%v): is it the data dir of a keyraft node?\n", *dataDir, unwrapPathError(err))
		return 1
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "keyraft", Level: hclog.Info, Output: e.Stderr})
	res := make(chan error, 1)
	go func() { res <- cluster.Recover(*dataDir, *peersFile, logger) }()
	select {
	case err = <-res:
	case <-time.After(recoverLockHint):
		// The Raft log is locked while its node runs, and opening it waits.
		fmt.Fprintf(e.Stderr, "keyraft recover: waiting for the lock on %s: is the node still running? Stop it first.\n", filepath.Join(*dataDir, "raft.db"))
		err = <-res
	}
	if err != nil {
		fmt.Fprintf(e.Stderr, "keyraft recover: %v\n", err)
		return 1
	}
	fmt.Fprintf(e.Stdout, "recovered %s: the raft configuration is now %d servers; start the node(s) normally\n", *dataDir, len(peers))
	return 0
}
