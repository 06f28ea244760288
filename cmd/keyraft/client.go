package main

// The command-line client: `keyraft keys …` and `keyraft verify …`, plain HTTP
// clients of the admin and verify APIs (spec §3, §4). Output formatting lives
// in client_table.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	defaultAddr = "http://127.0.0.1:8080"
	// clientTimeout bounds every HTTP call of the client.
	clientTimeout = 30 * time.Second
	// maxResponseBytes bounds how much of an answer the client reads.
	maxResponseBytes = 256 << 20
	// maxImportBytes bounds the import file read from disk or stdin.
	maxImportBytes = 256 << 20
)

const keysUsage = `usage: keyraft keys <command> [arguments] [flags]

commands:
  create  --name N [--workspace W] [--owner O] [--type secret|publishable|admin]
          [--env live|test] [--prefix P] [--scopes a,b] [--origins o1,o2]
          [--resources r1,r2] [--rate-limit N] [--metadata k=v ...]
          [--expires-at RFC3339] [--inactive]
  list    [--workspace W] [--owner O] [--type T] [--active true|false]
          [--limit N] [--cursor C] [--all]
  get     ID
  update  ID [--name N] [--scopes a,b] [--origins o1,o2] [--resources r1,r2]
          [--rate-limit N] [--metadata k=v ...] [--active true|false]
          [--expires-at RFC3339|never]
  rotate  ID [--grace DURATION]   (24h, 90m, 7d or seconds; default 0)
  revoke  ID                      (final: the key can never be re-enabled)
  delete  ID
  import  FILE|-                  ({"keys":[...]} or a JSON array of keys)

common flags (before or after the arguments):
  --addr URL        server address (env KEYRAFT_ADDR, default http://127.0.0.1:8080)
  --token TOKEN     admin key (env KEYRAFT_TOKEN)
  --json            print the answer's data as JSON instead of a table
  --request-id ID   send X-Request-Id: ID

Run 'keyraft keys <command> -h' for the flags of one command.
`

const verifyUsage = `usage: keyraft verify KEY|- [flags]

Verifies a key with POST /v1/verify. KEY "-" reads the key from stdin, which
keeps it out of the shell history. Exits 0 when the key is valid, 1 when it is
not (the code and message also go to stderr).

flags (before or after KEY):
  --scope S         the action the key must allow (calls:start)
  --resource R      the resource the key must be allowed to act on
  --origin O        the browser origin (required for publishable keys)
  --min-index N     wait (up to 1 s) until the node has applied Raft index N
  --addr URL        server address (env KEYRAFT_ADDR, default http://127.0.0.1:8080)
  --json            print the server's answer as JSON instead of a table
  --request-id ID   send X-Request-Id: ID
`

// cliEnv is everything a client command touches outside its arguments, so
// tests can run commands against captured streams and a fake environment.
type cliEnv struct {
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

func osEnv() cliEnv {
	return cliEnv{Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

// runKeys runs `keyraft keys …` on the process's streams and environment.
func runKeys(args []string) int { return keysCmd(args, osEnv()) }

// runVerify runs `keyraft verify …` on the process's streams and environment.
func runVerify(args []string) int { return verifyCmd(args, osEnv()) }

// command is one subcommand of a command group: its names and its function.
type command struct {
	names []string
	run   func([]string, cliEnv) int
}

// dispatch runs the subcommand args[0] of `keyraft <group>`, or prints the
// group's usage (exit 0 for help, 2 otherwise).
func dispatch(group, usage string, cmds []command, args []string, e cliEnv) int {
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, usage)
		return 2
	}
	sub, rest := args[0], args[1:]
	for _, c := range cmds {
		for _, name := range c.names {
			if name == sub {
				return c.run(rest, e)
			}
		}
	}
	switch sub {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.Stdout, usage)
		return 0
	}
	fmt.Fprintf(e.Stderr, "keyraft: unknown %s command %q\n\n%s", group, sub, usage)
	return 2
}

// keysCmd dispatches `keyraft keys <command>`.
func keysCmd(args []string, e cliEnv) int {
	return dispatch("keys", keysUsage, []command{
		{[]string{"create"}, keysCreate},
		{[]string{"list", "ls"}, keysList},
		{[]string{"get", "show"}, keysGet},
		{[]string{"update"}, keysUpdate},
		{[]string{"rotate"}, keysRotate},
		{[]string{"revoke"}, keysRevoke},
		{[]string{"delete", "rm"}, keysDelete},
		{[]string{"import"}, keysImport},
	}, args, e)
}

// ---------------------------------------------------------------------------
// Flags

// cmdFlags is one command's flag set plus the flags every command shares.
type cmdFlags struct {
	fs        *flag.FlagSet
	name      string // "keys create"
	synopsis  string // "ID [flags]"
	usageText string // when set, the whole usage text
	addr      string
	token     string
	json      bool
	requestID string
}

func newCmdFlags(name, synopsis string, withToken bool) *cmdFlags {
	c := &cmdFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), name: name, synopsis: synopsis}
	c.fs.StringVar(&c.addr, "addr", "", "server address (env KEYRAFT_ADDR, default "+defaultAddr+")")
	if withToken {
		c.fs.StringVar(&c.token, "token", "", "admin key (env KEYRAFT_TOKEN)")
	}
	c.fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	c.fs.StringVar(&c.requestID, "request-id", "", "send X-Request-Id")
	return c
}

func (c *cmdFlags) printUsage(w io.Writer) {
	if c.usageText != "" {
		fmt.Fprint(w, c.usageText)
		return
	}
	fmt.Fprintf(w, "usage: keyraft %s %s\n\nflags (before or after the arguments):\n", c.name, c.synopsis)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
}

// parse parses args, letting flags and positional arguments come in any
// order ("--" ends the flags). It returns the positional arguments and, when
// done is true, the exit code the command must return (0 for -h, 2 for a
// usage error, already reported).
func (c *cmdFlags) parse(args []string, e cliEnv, minPos, maxPos int) (pos []string, code int, done bool) {
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	pos, err := parseInterspersed(c.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printUsage(e.Stdout)
		return nil, 0, true
	}
	if err != nil {
		return nil, c.usageError(e, "%v", err), true
	}
	if len(pos) < minPos {
		return nil, c.usageError(e, "missing argument"), true
	}
	if maxPos >= 0 && len(pos) > maxPos {
		return nil, c.usageError(e, "unexpected argument %q", pos[maxPos]), true
	}
	return pos, 0, false
}

// oneArg parses args for a command that takes exactly one non-empty
// positional argument (a key id, a node id, a file); what names it in the
// usage error.
func (c *cmdFlags) oneArg(args []string, e cliEnv, what string) (arg string, code int, done bool) {
	pos, code, done := c.parse(args, e, 1, 1)
	if done {
		return "", code, true
	}
	if pos[0] == "" {
		return "", c.usageError(e, "empty %s", what), true
	}
	return pos[0], 0, false
}

// usageError reports a usage error with the command's usage and returns 2.
func (c *cmdFlags) usageError(e cliEnv, format string, a ...any) int {
	fmt.Fprintf(e.Stderr, "keyraft %s: %s\n", c.name, fmt.Sprintf(format, a...))
	c.printUsage(e.Stderr)
	return 2
}

// set reports the names of the flags given on the command line.
func (c *cmdFlags) set() map[string]bool {
	m := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// parseInterspersed parses fs over args where flags may follow positional
// arguments; it returns the positional arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if endedByTerminator(fs, args[:len(args)-len(rest)]) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// endedByTerminator reports whether the flag parse that consumed these
// arguments stopped at a "--" (rather than taking "--" as a flag's value).
func endedByTerminator(fs *flag.FlagSet, consumed []string) bool {
	n := len(consumed)
	if n == 0 || consumed[n-1] != "--" {
		return false
	}
	if n == 1 {
		return true
	}
	prev := consumed[n-2]
	if len(prev) < 2 || prev[0] != '-' || prev == "--" {
		return true
	}
	name := strings.TrimLeft(prev, "-")
	if strings.Contains(name, "=") {
		return true
	}
	f := fs.Lookup(name)
	if f == nil {
		return true
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return true
	}
	return false // "--" was the value of the flag before it
}

// metadataFlag collects repeated --metadata k=v flags. An empty value
// (--metadata "") asks for an empty map, which clears metadata on update.
type metadataFlag struct{ m map[string]string }

func (f *metadataFlag) String() string { return "" }

func (f *metadataFlag) Set(s string) error {
	if f.m == nil {
		f.m = map[string]string{}
	}
	if s == "" {
		return nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	f.m[k] = v
	return nil
}

// splitList splits a comma-separated flag value; "" is the empty list.
func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseGrace reads a grace period: a Go duration (24h, 90m), whole days (7d)
// or plain seconds (3600), in whole seconds.
func parseGrace(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n > 1<<40 {
			return 0, fmt.Errorf("invalid grace period %q", s)
		}
		return n * 86400, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid grace period %q: want a duration like 24h, 7d or seconds", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("invalid grace period %q: want whole seconds", s)
	}
	return int64(d / time.Second), nil
}

func parseBoolFlag(name, s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("--%s wants true or false, got %q", name, s)
	}
	return b, nil
}

// ---------------------------------------------------------------------------
// HTTP

// client calls one keyraft node.
type client struct {
	base      string // scheme://host[:port][/path], no trailing slash
	token     string
	requestID string
	http      *http.Client
}

// newClient builds a client from the flags and the environment. needToken
// makes a missing admin key a usage error (reported; code 2).
func (c *cmdFlags) newClient(e cliEnv, needToken bool) (*client, int, bool) {
	addr := c.addr
	if addr == "" {
		addr = strings.TrimSpace(e.Getenv("KEYRAFT_ADDR"))
	}
	if addr == "" {
		addr = defaultAddr
	}
	base, err := normalizeAddr(addr)
	if err != nil {
		fmt.Fprintf(e.Stderr, "keyraft: %v\n", err)
		return nil, 2, false
	}
	token := c.token
	if token == "" {
		token = strings.TrimSpace(e.Getenv("KEYRAFT_TOKEN"))
	}
	if needToken && token == "" {
		fmt.Fprintln(e.Stderr, "keyraft: no admin key: set KEYRAFT_TOKEN or pass --token")
		return nil, 2, false
	}
	return &client{
		base:      base,
		token:     token,
		requestID: c.requestID,
		http:      &http.Client{Timeout: clientTimeout},
	}, 0, true
}

// normalizeAddr accepts "http://h:p", "https://h:p/prefix" or a bare "h:p".
func normalizeAddr(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("invalid server address %q: want http(s)://host:port", addr)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// apiError is an error answer of the server (or of whatever answered).
type apiError struct {
	Status     int
	Code       string
	Message    string
	Details    []fieldIssue
	RetryAfter string
}

type fieldIssue struct {
	Field string `json:"field"`
	Issue string `json:"issue"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

type respMeta struct {
	RequestID  string `json:"request_id"`
	Timestamp  string `json:"timestamp"`
	Index      uint64 `json:"index"`
	NextCursor string `json:"next_cursor"`
}

// response is a decoded success answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte          // the raw body
	Data   json.RawMessage // envelope data (admin calls)
	Meta   respMeta
}

// call sends one request. body nil sends no body. Admin calls (auth) carry the
// admin key and get their envelope decoded; a non-2xx admin answer is returned
// as *apiError.
func (c *client) call(method, path string, query url.Values, body []byte, auth bool) (*response, error) {
	var (
		rd    io.Reader
		ctype string
	)
	if body != nil {
		rd, ctype = bytes.NewReader(body), "application/json"
	}
	req, err := c.newRequest(context.Background(), method, path, query, rd, ctype, auth)
	if err != nil {
		return nil, err
	}
	res, err := c.send(nil, req)
	if err != nil {
		return nil, err
	}
	return readAnswer(method, path, res, auth)
}

// readAnswer reads and closes the answer of a call (see call).
func readAnswer(method, path string, res *http.Response, auth bool) (*response, error) {
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if len(raw) > maxResponseBytes {
		return nil, fmt.Errorf("the answer of %s %s is larger than %d bytes", method, path, maxResponseBytes)
	}
	r := &response{Status: res.StatusCode, Header: res.Header, Body: raw}
	if !auth {
		return r, nil // verify: the caller reads the body itself
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, errorFromResponse(res.StatusCode, res.Header, raw)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return r, nil // 204
	}
	var env struct {
		Data json.RawMessage `json:"data"`
		Meta respMeta        `json:"meta"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("unexpected answer from the server (HTTP %d): %s", res.StatusCode, snippet(raw))
	}
	r.Data, r.Meta = env.Data, env.Meta
	return r, nil
}

// newRequest builds a request to the node with the client's headers. body
// nil sends no body; contentType "" sets no Content-Type; auth adds the
// admin key.
func (c *client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string, auth bool) (*http.Request, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "keyraft-cli/"+version)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.requestID != "" {
		req.Header.Set("X-Request-Id", c.requestID)
	}
	return req, nil
}

// send sends req with hc (c.http when nil). A failure to get an answer is
// reported as "cannot reach"; the caller closes the response body.
func (c *client) send(hc *http.Client, req *http.Request) (*http.Response, error) {
	if hc == nil {
		hc = c.http
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", c.base, unwrapURLError(err))
	}
	return res, nil
}

// errorFromResponse decodes an error envelope, or describes a body that is
// not one (a proxy's HTML page, say).
func errorFromResponse(status int, h http.Header, raw []byte) *apiError {
	var env struct {
		Error *struct {
			Code    string       `json:"code"`
			Message string       `json:"message"`
			Details []fieldIssue `json:"details"`
		} `json:"error"`
	}
	e := &apiError{Status: status, RetryAfter: h.Get("Retry-After")}
	if json.Unmarshal(raw, &env) == nil && env.Error != nil && env.Error.Code != "" {
		e.Code, e.Message, e.Details = env.Error.Code, env.Error.Message, env.Error.Details
		return e
	}
	e.Code = "HTTP_" + strconv.Itoa(status)
	e.Message = http.StatusText(status)
	if s := snippet(raw); s != "" {
		e.Message += ": " + s
	}
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// snippet is the start of a body, on one line, for an error message.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return clean(s)
}

// report prints err to stderr and returns exit code 1.
func report(w io.Writer, err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		msg := ae.Message
		if ae.RetryAfter != "" {
			msg += " (retry after " + ae.RetryAfter + "s)"
		}
		fmt.Fprintf(w, "keyraft: %s: %s\n", clean(ae.Code), clean(msg))
		for _, d := range ae.Details {
			if d.Field == "" {
				fmt.Fprintf(w, "  %s\n", clean(d.Issue))
			} else {
				fmt.Fprintf(w, "  %s: %s\n", clean(d.Field), clean(d.Issue))
			}
		}
		return 1
	}
	fmt.Fprintf(w, "keyraft: %s\n", clean(err.Error()))
	return 1
}

func keyPath(id string) string { return "/v1/keys/" + url.PathEscape(id) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings, numbers, bools and lists
	}
	return b
}

// ---------------------------------------------------------------------------
// keys commands

func keysCreate(args []string, e cliEnv) int {
	c := newCmdFlags("keys create", "--name N [flags]", true)
	fs := c.fs
	name := fs.String("name", "", "name of the key (required, 1-120 characters)")
	workspace := fs.String("workspace", "", "workspace_id (default: the admin key's workspace)")
	owner := fs.String("owner", "", "owner_id: the end customer the key belongs to")
	typ := fs.String("type", "", "secret | publishable | admin")
	env := fs.String("env", "", "live | test")
	prefix := fs.String("prefix", "", "workspace prefix of the token (acme → acme_sk_live_…)")
	scopes := fs.String("scopes", "", "comma-separated scopes")
	origins := fs.String("origins", "", "comma-separated allowed origins (required for publishable keys)")
	resources := fs.String("resources", "", "comma-separated allowed resources (empty = any)")
	rate := fs.Int("rate-limit", 0, "requests per minute (0 = unlimited)")
	var md metadataFlag
	fs.Var(&md, "metadata", "metadata `key=value` (repeatable)")
	expires := fs.String("expires-at", "", "expiry time, RFC 3339")
	inactive := fs.Bool("inactive", false, "create the key disabled")
	if _, code, done := c.parse(args, e, 0, 0); done {
		return code
	}
	set := c.set()
	if !set["name"] {
		return c.usageError(e, "--name is required")
	}
	body := map[string]any{"name": *name}
	strField := func(flagName, field, v string) {
		if set[flagName] {
			body[field] = v
		}
	}
	strField("workspace", "workspace_id", *workspace)
	strField("owner", "owner_id", *owner)
	strField("type", "type", *typ)
	strField("env", "environment", *env)
	strField("prefix", "workspace_prefix", *prefix)
	if set["scopes"] {
		body["scopes"] = splitList(*scopes)
	}
	if set["origins"] {
		body["allowed_origins"] = splitList(*origins)
	}
	if set["resources"] {
		body["allowed_resources"] = splitList(*resources)
	}
	if set["rate-limit"] {
		body["rate_limit_per_min"] = *rate
	}
	if set["metadata"] {
		body["metadata"] = md.m
	}
	if set["expires-at"] && *expires != "" && *expires != "never" {
		body["expires_at"] = *expires
	}
	if *inactive {
		body["active"] = false
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, "/v1/keys", nil, mustJSON(body), true)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printKeyWithSecret(e, c.json, r.Data)
}

func keysList(args []string, e cliEnv) int {
	c := newCmdFlags("keys list", "[flags]", true)
	fs := c.fs
	workspace := fs.String("workspace", "", "only keys of this workspace_id")
	owner := fs.String("owner", "", "only keys of this owner_id")
	typ := fs.String("type", "", "only keys of this type")
	active := fs.String("active", "", "only active (true) or inactive (false) keys")
	limit := fs.Int("limit", 0, "page size")
	cursor := fs.String("cursor", "", "start at this cursor (from a previous page)")
	all := fs.Bool("all", false, "follow the cursors to the last page")
	if _, code, done := c.parse(args, e, 0, 0); done {
		return code
	}
	set := c.set()
	q := url.Values{}
	if *workspace != "" {
		q.Set("workspace_id", *workspace)
	}
	if *owner != "" {
		q.Set("owner_id", *owner)
	}
	if *typ != "" {
		q.Set("type", *typ)
	}
	if set["active"] {
		b, err := parseBoolFlag("active", *active)
		if err != nil {
			return c.usageError(e, "%v", err)
		}
		q.Set("active", strconv.FormatBool(b))
	}
	if set["limit"] {
		if *limit <= 0 {
			return c.usageError(e, "--limit must be positive")
		}
		q.Set("limit", strconv.Itoa(*limit))
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	var records []json.RawMessage
	next, more := *cursor, ""
	seen := map[string]bool{next: next != ""}
	for {
		if next != "" {
			q.Set("cursor", next)
		}
		r, err := cl.call(http.MethodGet, "/v1/keys", q, nil, true)
		if err != nil {
			return report(e.Stderr, err)
		}
		var page []json.RawMessage
		if len(r.Data) > 0 && string(r.Data) != "null" {
			if err := json.Unmarshal(r.Data, &page); err != nil {
				return report(e.Stderr, fmt.Errorf("unexpected answer from the server: data is not a list of keys"))
			}
		}
		records = append(records, page...)
		next = r.Meta.NextCursor
		if next == "" {
			break
		}
		if !*all {
			more = next
			break
		}
		if seen[next] {
			return report(e.Stderr, fmt.Errorf("the server returned cursor %q twice; stopping", next))
		}
		seen[next] = true
	}
	if c.json {
		if records == nil {
			records = []json.RawMessage{}
		}
		if code := printJSON(e, mustJSON(records)); code != 0 {
			return code
		}
	} else {
		if err := printKeyTable(e.Stdout, records); err != nil {
			return report(e.Stderr, err)
		}
		if len(records) == 0 {
			fmt.Fprintln(e.Stderr, "no keys")
		}
	}
	if more != "" {
		fmt.Fprintf(e.Stderr, "more: --cursor %s\n", clean(more))
	}
	return 0
}

func keysGet(args []string, e cliEnv) int {
	c := newCmdFlags("keys get", "ID [flags]", true)
	id, code, done := c.oneArg(args, e, "key id")
	if done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodGet, keyPath(id), nil, nil, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printRecordData(e, c.json, r.Data)
}

func keysUpdate(args []string, e cliEnv) int {
	c := newCmdFlags("keys update", "ID [flags]", true)
	fs := c.fs
	name := fs.String("name", "", "new name")
	scopes := fs.String("scopes", "", `comma-separated scopes (replaces them; "" clears)`)
	origins := fs.String("origins", "", `comma-separated allowed origins (replaces them; "" clears)`)
	resources := fs.String("resources", "", `comma-separated allowed resources (replaces them; "" = any)`)
	rate := fs.Int("rate-limit", 0, "requests per minute (0 = unlimited)")
	var md metadataFlag
	fs.Var(&md, "metadata", `metadata key=value (repeatable; replaces the map; "" clears it)`)
	active := fs.String("active", "", "true enables the key, false disables it")
	expires := fs.String("expires-at", "", `expiry time, RFC 3339, or "never"`)
	id, code, done := c.oneArg(args, e, "key id")
	if done {
		return code
	}
	set := c.set()
	body := map[string]any{}
	if set["name"] {
		body["name"] = *name
	}
	if set["scopes"] {
		body["scopes"] = splitList(*scopes)
	}
	if set["origins"] {
		body["allowed_origins"] = splitList(*origins)
	}
	if set["resources"] {
		body["allowed_resources"] = splitList(*resources)
	}
	if set["rate-limit"] {
		body["rate_limit_per_min"] = *rate
	}
	if set["metadata"] {
		body["metadata"] = md.m
	}
	if set["active"] {
		b, err := parseBoolFlag("active", *active)
		if err != nil {
			return c.usageError(e, "%v", err)
		}
		body["active"] = b
	}
	if set["expires-at"] {
		if *expires == "never" || *expires == "" {
			body["expires_at"] = nil
		} else {
			body["expires_at"] = *expires
		}
	}
	if len(body) == 0 {
		return c.usageError(e, "nothing to update: give at least one of --name, --scopes, --origins, --resources, --rate-limit, --metadata, --active, --expires-at")
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPatch, keyPath(id), nil, mustJSON(body), true)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printRecordData(e, c.json, r.Data)
}

func keysRotate(args []string, e cliEnv) int {
	c := newCmdFlags("keys rotate", "ID [--grace DURATION] [flags]", true)
	grace := c.fs.String("grace", "", "how long the old token stays valid: 24h, 90m, 7d or seconds (default 0)")
	id, code, done := c.oneArg(args, e, "key id")
	if done {
		return code
	}
	body := map[string]any{}
	if c.set()["grace"] {
		secs, err := parseGrace(*grace)
		if err != nil {
			return c.usageError(e, "%v", err)
		}
		body["grace_period_seconds"] = secs
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, keyPath(id)+"/rotate", nil, mustJSON(body), true)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printKeyWithSecret(e, c.json, r.Data)
}

func keysRevoke(args []string, e cliEnv) int {
	c := newCmdFlags("keys revoke", "ID [flags]", true)
	id, code, done := c.oneArg(args, e, "key id")
	if done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, keyPath(id)+"/revoke", nil, nil, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printRecordData(e, c.json, r.Data)
}

func keysDelete(args []string, e cliEnv) int {
	c := newCmdFlags("keys delete", "ID [flags]", true)
	id, code, done := c.oneArg(args, e, "key id")
	if done {
		return code
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	if _, err := cl.call(http.MethodDelete, keyPath(id), nil, nil, true); err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, mustJSON(map[string]any{"id": id, "deleted": true}))
	}
	fmt.Fprintf(e.Stdout, "deleted %s\n", clean(id))
	return 0
}

func keysImport(args []string, e cliEnv) int {
	c := newCmdFlags("keys import", "FILE|- [flags]", true)
	pos, code, done := c.parse(args, e, 1, 1)
	if done {
		return code
	}
	var (
		raw []byte
		err error
	)
	if pos[0] == "-" {
		raw, err = io.ReadAll(io.LimitReader(e.Stdin, maxImportBytes+1))
	} else {
		var f *os.File
		if f, err = os.Open(pos[0]); err == nil {
			raw, err = io.ReadAll(io.LimitReader(f, maxImportBytes+1))
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(e.Stderr, "keyraft: %v\n", err)
		return 1
	}
	if len(raw) > maxImportBytes {
		fmt.Fprintf(e.Stderr, "keyraft: %s is larger than %d bytes; split it\n", pos[0], maxImportBytes)
		return 1
	}
	body, err := importBody(raw)
	if err != nil {
		fmt.Fprintf(e.Stderr, "keyraft: %s: %v\n", pos[0], err)
		return 1
	}
	cl, code, ok := c.newClient(e, true)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, "/v1/keys/import", nil, body, true)
	if err != nil {
		return report(e.Stderr, err)
	}
	if c.json {
		return printJSON(e, r.Data)
	}
	var res struct {
		Imported int `json:"imported"`
	}
	if err := json.Unmarshal(r.Data, &res); err != nil {
		return report(e.Stderr, fmt.Errorf("unexpected answer from the server: %s", snippet(r.Data)))
	}
	noun := "keys"
	if res.Imported == 1 {
		noun = "key"
	}
	fmt.Fprintf(e.Stdout, "imported %d %s\n", res.Imported, noun)
	return 0
}

// importBody checks an import file and returns the request body: an object
// is sent as it is, an array is wrapped as {"keys": array}.
func importBody(raw []byte) ([]byte, error) {
	t := bytes.TrimSpace(raw)
	t = bytes.TrimPrefix(t, []byte("\xef\xbb\xbf")) // a UTF-8 BOM
	if !json.Valid(t) {
		return nil, errors.New("not valid JSON")
	}
	switch t[0] {
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(t, &obj); err != nil {
			return nil, err
		}
		if _, ok := obj["keys"]; !ok {
			return nil, errors.New(`want {"keys": [...]} or a JSON array of keys`)
		}
		return t, nil
	case '[':
		out := make([]byte, 0, len(t)+10)
		out = append(out, `{"keys":`...)
		out = append(out, t...)
		return append(out, '}'), nil
	}
	return nil, errors.New(`want {"keys": [...]} or a JSON array of keys`)
}

// ---------------------------------------------------------------------------
// verify

// verifyCmd runs `keyraft verify KEY|- [flags]`.
func verifyCmd(args []string, e cliEnv) int {
	c := newCmdFlags("verify", "KEY|- [flags]", false)
	c.usageText = verifyUsage
	fs := c.fs
	scope := fs.String("scope", "", "the action the key must allow")
	resource := fs.String("resource", "", "the resource the key must be allowed to act on")
	origin := fs.String("origin", "", "the browser origin")
	minIndex := fs.Uint64("min-index", 0, "wait until the node has applied this Raft index")
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, verifyUsage)
		return 2
	}
	pos, code, done := c.parse(args, e, 1, 1)
	if done {
		return code
	}
	key := pos[0]
	if key == "-" {
		b, err := io.ReadAll(io.LimitReader(e.Stdin, 64<<10))
		if err != nil {
			fmt.Fprintf(e.Stderr, "keyraft: reading the key from stdin: %v\n", err)
			return 1
		}
		key = strings.TrimSpace(string(b))
		if i := strings.IndexAny(key, "\r\n"); i >= 0 {
			key = strings.TrimSpace(key[:i])
		}
	}
	if key == "" {
		return c.usageError(e, "empty key")
	}
	body := map[string]any{"key": key}
	if *scope != "" {
		body["scope"] = *scope
	}
	if *resource != "" {
		body["resource"] = *resource
	}
	if *origin != "" {
		body["origin"] = *origin
	}
	var q url.Values
	if c.set()["min-index"] {
		q = url.Values{"min_index": {strconv.FormatUint(*minIndex, 10)}}
	}
	cl, code, ok := c.newClient(e, false)
	if !ok {
		return code
	}
	r, err := cl.call(http.MethodPost, "/v1/verify", q, mustJSON(body), false)
	if err != nil {
		return report(e.Stderr, err)
	}
	return printVerify(e, c.json, r)
}
