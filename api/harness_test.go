package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keyraft/keyraft/api"
	"github.com/keyraft/keyraft/cluster"
	"github.com/keyraft/keyraft/keyindex"
)

// syncBuffer collects every log line of a test node; hclog's sub-loggers and
// raft's goroutines write to it concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// nodeOptions tunes a test node; the zero value is a normal one.
type nodeOptions struct {
	usageFlush time.Duration // default 100ms
	quiet      bool          // log to io.Discard (benchmarks)
	// generatedRoot lets the node generate its root key (no --root-key-file);
	// the harness takes it from AnnounceRootKey.
	generatedRoot bool
	maxStale      time.Duration // api.Config.MaxStale
	// purgeInterval is how often ended rotations are purged (default 200ms);
	// tests that compare states before and after a request set it long, so
	// no housekeeping write lands in between.
	purgeInterval time.Duration
	// apiConfig, when set, adjusts the HTTP server's configuration.
	apiConfig func(*api.Config)
}

// testNode is one real keyraft node: Raft on loopback with its data in a
// temp dir, housekeeping, and the HTTP API served on a loopback listener.
type testNode struct {
	t         testing.TB
	opts      nodeOptions
	dir       string
	raftAddr  string // chosen once per data dir: the Raft configuration stores it
	rootToken string
	logs      *syncBuffer
	logger    hclog.Logger

	announceMu sync.Mutex
	announced  []string // root keys the node generated and announced

	node   *cluster.Node
	srv    *api.Server
	ln     net.Listener
	served chan error
	base   string
	client *http.Client
	up     bool
}

// startNode starts a one-node cluster on a fresh data dir with a root key
// the test knows.
func startNode(t testing.TB, opts ...nodeOptions) *testNode {
	t.Helper()
	var o nodeOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.usageFlush == 0 {
		o.usageFlush = 100 * time.Millisecond
	}
	if o.purgeInterval == 0 {
		o.purgeInterval = 200 * time.Millisecond
	}
	n := &testNode{t: t, opts: o, dir: t.TempDir(), raftAddr: freeAddr(t), logs: &syncBuffer{}}
	if !o.generatedRoot {
		root, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeAdmin, keyindex.EnvLive)
		if err != nil {
			t.Fatal(err)
		}
		n.rootToken = root.Plaintext
	}
	var out io.Writer = n.logs
	if o.quiet {
		out = io.Discard
	}
	n.logger = hclog.New(&hclog.LoggerOptions{Name: "keyraft", Level: hclog.Debug, Output: out})
	n.start()
	t.Cleanup(n.stop)
	return n
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start opens the node on n.dir and n.raftAddr and serves HTTP on a new
// loopback port; it returns once /readyz answers 200.
func (n *testNode) start() {
	t := n.t
	t.Helper()
	node, err := cluster.Open(cluster.Config{
		DataDir:          n.dir,
		RaftAddr:         n.raftAddr,
		Bootstrap:        true,
		HeartbeatTimeout: 200 * time.Millisecond,
		ElectionTimeout:  200 * time.Millisecond,
		Logger:           n.logger,
	})
	if err != nil {
		t.Fatalf("opening node: %v", err)
	}
	hk := cluster.Housekeeping{
		RootToken:          n.rootToken,
		UsageFlushInterval: n.opts.usageFlush,
		PurgeInterval:      n.opts.purgeInterval,
	}
	if n.opts.generatedRoot {
		hk.RootToken = ""
		hk.AnnounceRootKey = func(plaintext string) {
			n.announceMu.Lock()
			defer n.announceMu.Unlock()
			n.announced = append(n.announced, plaintext)
		}
	}
	if err := node.StartHousekeeping(hk); err != nil {
		node.Shutdown()
		t.Fatalf("housekeeping: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		node.Shutdown()
		t.Fatal(err)
	}
	n.node, n.ln = node, ln
	cfg := api.Config{Logger: n.logger, MaxStale: n.opts.maxStale}
	if n.opts.apiConfig != nil {
		n.opts.apiConfig(&cfg)
	}
	n.srv = api.New(node, cfg)
	n.served = make(chan error, 1)
	go func(srv *api.Server, served chan error) { served <- srv.Serve(ln) }(n.srv, n.served)
	n.base = "http://" + ln.Addr().String()
	n.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	n.up = true

	deadline := time.Now().Add(15 * time.Second)
	for {
		r := n.do("GET", "/readyz", "", nil)
		if r.Status == http.StatusOK && n.rootToken == "" {
			if a := n.announcedKeys(); len(a) > 0 {
				n.rootToken = a[0]
			}
		}
		if r.Status == http.StatusOK && n.rootToken != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready in time: %d %s", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// announcedKeys returns the root keys the node announced so far.
func (n *testNode) announcedKeys() []string {
	n.announceMu.Lock()
	defer n.announceMu.Unlock()
	return append([]string(nil), n.announced...)
}

// stop shuts the HTTP server and the node down (idempotent).
func (n *testNode) stop() {
	if !n.up {
		return
	}
	n.up = false
	n.client.CloseIdleConnections()
	if err := n.srv.Shutdown(context.Background()); err != nil {
		n.t.Errorf("HTTP shutdown: %v", err)
	}
	if err := <-n.served; err != nil {
		n.t.Errorf("Serve: %v", err)
	}
	if err := n.node.Shutdown(); err != nil {
		n.t.Errorf("node shutdown: %v", err)
	}
}

// restart stops the node and opens it again on the same data dir and Raft
// address (the HTTP address changes).
func (n *testNode) restart() {
	n.t.Helper()
	n.stop()
	n.start()
}

// result is one HTTP answer.
type result struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any // nil when the body is not a JSON object
}

// chunked is a body sent with Transfer-Encoding: chunked.
type chunked string

// do sends one request over loopback. body is nil (none), a string or []byte
// (sent as is), chunked, or anything else (JSON-encoded). hdrs are name,
// value pairs.
func (n *testNode) do(method, path, token string, body any, hdrs ...string) result {
	n.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			n.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	if c, ok := body.(chunked); ok {
		// A reader of unknown length: net/http sends it chunked.
		rd = io.MultiReader(strings.NewReader(string(c)))
	}
	req, err := http.NewRequest(method, n.base+path, rd)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, ok := body.(chunked); ok {
		req.TransferEncoding = []string{"chunked"}
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdrs); i += 2 {
		req.Header.Set(hdrs[i], hdrs[i+1])
	}
	resp, err := n.client.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil {
		r.JSON = m
	}
	return r
}

// want fails the test unless the answer has this status.
func (r result) want(t testing.TB, status int) result {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	return r
}

// wantError fails the test unless the answer is an error envelope with this
// status and code.
func (r result) wantError(t testing.TB, status int, code string) result {
	t.Helper()
	r.want(t, status)
	if got := r.errCode(); got != code {
		t.Fatalf("error code %q, want %q; body: %s", got, code, r.Body)
	}
	return r
}

// wantVerify fails the test unless a verify answer has this status and code.
func (r result) wantVerify(t testing.TB, status int, code string) result {
	t.Helper()
	r.want(t, status)
	if r.JSON == nil {
		t.Fatalf("verify answer is not a JSON object: %s", r.Body)
	}
	if got, _ := r.JSON["code"].(string); got != code {
		t.Fatalf("verify code %q, want %q; body: %s", got, code, r.Body)
	}
	if valid, _ := r.JSON["valid"].(bool); valid != (code == "VALID") {
		t.Fatalf("verify valid=%v with code %s; body: %s", r.JSON["valid"], code, r.Body)
	}
	return r
}

func (r result) errCode() string {
	e, _ := r.JSON["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// detailFields lists the field names of an error's details.
func (r result) detailFields() []string {
	e, _ := r.JSON["error"].(map[string]any)
	ds, _ := e["details"].([]any)
	var out []string
	for _, d := range ds {
		m, _ := d.(map[string]any)
		f, _ := m["field"].(string)
		out = append(out, f)
	}
	return out
}

// hasDetail reports whether a detail names field (or an element of it, field[i]).
func (r result) hasDetail(field string) bool {
	for _, f := range r.detailFields() {
		if f == field || strings.HasPrefix(f, field+"[") || strings.HasPrefix(f, field+".") {
			return true
		}
	}
	return false
}

type metaOut struct {
	RequestID  string `json:"request_id"`
	Timestamp  string `json:"timestamp"`
	Index      uint64 `json:"index"`
	NextCursor string `json:"next_cursor"`
}

// envelope decodes {"data": T, "meta": …}.
func envelope[T any](t testing.TB, r result) (T, metaOut) {
	t.Helper()
	var env struct {
		Data T       `json:"data"`
		Meta metaOut `json:"meta"`
	}
	if err := json.Unmarshal(r.Body, &env); err != nil {
		t.Fatalf("decoding %s: %v", r.Body, err)
	}
	return env.Data, env.Meta
}

// keyOut is a record as the API returns it, with the plaintext when the
// answer carries one.
type keyOut struct {
	keyindex.Record
	Key string `json:"key"`
}

// stable drops the fields that verifications change (usage), so records can
// be compared before and after.
func (k keyOut) stable() keyOut {
	k.LastUsedAt, k.UsageCount = nil, 0
	k.Key = ""
	return k
}

// createKey creates a key as the given admin and returns it with its plaintext
// and the write's Raft index.
func (n *testNode) createKey(token string, fields map[string]any) (keyOut, uint64) {
	n.t.Helper()
	r := n.do("POST", "/v1/keys", token, fields).want(n.t, http.StatusCreated)
	k, m := envelope[keyOut](n.t, r)
	if k.Key == "" || k.ID == "" || m.Index == 0 {
		n.t.Fatalf("create answer lacks key, id or index: %s", r.Body)
	}
	return k, m.Index
}

// secretKey creates a plain secret key in workspace ws as root.
func (n *testNode) secretKey(ws string, extra ...any) (keyOut, uint64) {
	n.t.Helper()
	f := map[string]any{"name": "k", "workspace_id": ws}
	for i := 0; i+1 < len(extra); i += 2 {
		f[extra[i].(string)] = extra[i+1]
	}
	return n.createKey(n.rootToken, f)
}

// getKey reads a key as root; it fails the test unless the key exists.
func (n *testNode) getKey(id string) keyOut {
	n.t.Helper()
	k, _ := envelope[keyOut](n.t, n.do("GET", "/v1/keys/"+id, n.rootToken, nil).want(n.t, http.StatusOK))
	return k
}

// listAll pages through GET /v1/keys with the given query (without limit or
// cursor) as token and returns every record.
func (n *testNode) listAll(token, query string) []keyOut {
	n.t.Helper()
	var all []keyOut
	cursor := ""
	for range 1000 {
		q := "?limit=37"
		if query != "" {
			q += "&" + query
		}
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		page, m := envelope[[]keyOut](n.t, n.do("GET", "/v1/keys"+q, token, nil).want(n.t, http.StatusOK))
		all = append(all, page...)
		if m.NextCursor == "" {
			return all
		}
		cursor = m.NextCursor
	}
	n.t.Fatal("listing never ended")
	return nil
}

// verifyGET is the forward-auth form with the key in X-API-Key.
func (n *testNode) verifyGET(token, query string, hdrs ...string) result {
	n.t.Helper()
	path := "/v1/verify"
	if query != "" {
		path += "?" + query
	}
	return n.do("GET", path, "", nil, append([]string{"X-API-Key", token}, hdrs...)...)
}

// verifyPOST is the JSON form.
func (n *testNode) verifyPOST(body map[string]any, hdrs ...string) result {
	n.t.Helper()
	return n.do("POST", "/v1/verify", "", body, hdrs...)
}

func minIdx(i uint64) string { return fmt.Sprintf("min_index=%d", i) }

func itoa(i uint64) string { return fmt.Sprintf("%d", i) }

func parseUint(t testing.TB, s string) uint64 {
	t.Helper()
	var v uint64
	if _, err := fmt.Sscan(s, &v); err != nil || v == 0 {
		t.Fatalf("not a positive integer: %q", s)
	}
	return v
}
