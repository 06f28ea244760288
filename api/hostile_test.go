package api_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/api"
	"github.com/keyraft/keyraft/keyindex"
)

// stateMark is what "nothing changed" is checked against: the FSM's applied
// index and digest (every replicated byte), the key count and one record
// (in its binary encoding, so marks compare with ==).
type stateMark struct {
	applied uint64
	digest  string
	keys    int
	id, rec string
}

func (n *testNode) mark(id string) stateMark {
	f := n.node.FSM()
	applied, digest := f.Digest()
	m := stateMark{applied: applied, digest: digest, keys: f.Index().Len(), id: id}
	if r := f.Index().Get(id); r != nil {
		m.rec = string(keyindex.AppendRecord(nil, r))
	}
	return m
}

// unchanged fails the test if the state moved since m.
func (n *testNode) unchanged(t testing.TB, what string, m stateMark) {
	t.Helper()
	if got := n.mark(m.id); got != m {
		t.Errorf("%s changed the state: applied %d→%d, digest %s→%s, keys %d→%d, record of %q changed: %v",
			what, m.applied, got.applied, m.digest[:12], got.digest[:12], m.keys, got.keys, m.id, got.rec != m.rec)
	}
}

// rawAnswer is what a hand-written request over a raw TCP connection got.
type rawAnswer struct {
	status int
	body   string
	err    error         // reading the answer failed (reset, timeout)
	closed bool          // the server closed the connection after answering (or instead)
	after  time.Duration // from the first byte sent to the close (or answer)
}

// rawExchange writes req on a new loopback connection, then reads one answer
// and waits (up to wait) for the server to close the connection.
func (n *testNode) rawExchange(t testing.TB, req []byte, wait time.Duration) rawAnswer {
	t.Helper()
	c, err := net.Dial("tcp", n.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	var a rawAnswer
	if _, err := c.Write(req); err != nil {
		a.err = err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil {
		a.err = errors.Join(a.err, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.status, a.body = resp.StatusCode, string(b)
	}
	_, err = br.ReadByte()
	a.closed = err != nil && !isTimeout(err)
	a.after = time.Since(start)
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestHostileHTTP sends bad HTTP of every kind to a running node over
// loopback TCP. Each case checks the answer and that nothing changed.
func TestHostileHTTP(t *testing.T) {
	t.Parallel()
	const readTimeout = 700 * time.Millisecond
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour,
		apiConfig: func(c *api.Config) { c.ReadTimeout = readTimeout }})
	k, _ := n.secretKey("ws_h", "scopes", []string{"calls:*"})
	path := "/v1/keys/" + k.ID
	host := "Host: " + n.ln.Addr().String() + "\r\n"
	auth := "Authorization: Bearer " + n.rootToken + "\r\n"
	big := func(size int) string {
		return `{"name": "x", "workspace_id": "ws_h", "metadata": {"a": "` + strings.Repeat("a", size) + `"}}`
	}

	cases := []struct {
		name string
		run  func(t testing.TB)
	}{
		{"5 MiB body", func(t testing.TB) {
			b := big(5 << 20)
			n.do("POST", "/v1/keys", n.rootToken, b).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
			n.do("PATCH", path, n.rootToken, b).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
			n.do("POST", path+"/rotate", n.rootToken, b).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
			n.do("POST", "/v1/verify", "", `{"key":"`+strings.Repeat("k", 5<<20)+`"}`).want(t, http.StatusRequestEntityTooLarge)
			n.do("POST", "/v1/keys", n.rootToken, chunked(b)).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
			// Announced, then only partly sent: the answer comes at ReadTimeout.
			a := n.rawExchange(t, []byte("POST /v1/keys HTTP/1.1\r\n"+host+auth+"Content-Type: application/json\r\nContent-Length: 5242880\r\n\r\n"+b[:64<<10]), 5*time.Second)
			if a.status != http.StatusRequestEntityTooLarge || !strings.Contains(a.body, "BODY_TOO_LARGE") || !a.closed || a.after > readTimeout+2*time.Second {
				t.Errorf("announced 5 MiB body: %d %q closed=%v after %v (%v)", a.status, a.body, a.closed, a.after, a.err)
			}
			// Multipart bodies are not parsed ahead of the handler's limits.
			mp := "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f\"\r\n\r\n" + strings.Repeat("m", 5<<20) + "\r\n--b--\r\n"
			for _, p := range []string{"/v1/verify", "/v1/keys", "/v1/keys/import"} {
				r := n.do("POST", p, n.rootToken, mp, "Content-Type", "multipart/form-data; boundary=b")
				if r.Status != http.StatusRequestEntityTooLarge && r.Status != http.StatusBadRequest {
					t.Errorf("multipart body to %s: %d %s", p, r.Status, r.Body)
				}
			}
		}},
		{"slow headers", func(t testing.TB) {
			c, err := net.Dial("tcp", n.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\n%s", host)
			closed := make(chan time.Duration, 1)
			go func() {
				io.Copy(io.Discard, c) // returns when the server closes
				closed <- time.Since(start)
			}()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case d := <-closed:
					if d < readTimeout-50*time.Millisecond || d > readTimeout+2*time.Second {
						t.Errorf("connection closed after %v; ReadTimeout is %v", d, readTimeout)
					}
					return
				case <-tick.C:
					if _, err := fmt.Fprintf(c, "X-Drip-%d: x\r\n", i); err != nil {
						d := time.Since(start)
						if d < readTimeout-50*time.Millisecond {
							t.Errorf("write failed after %v: %v", d, err)
						}
						return
					}
					if time.Since(start) > 10*readTimeout {
						t.Fatalf("a slow client kept the connection for %v", time.Since(start))
					}
				}
			}
		}},
		{"64 KiB header", func(t testing.TB) {
			// Over raw TCP with the whole request in one write: the server
			// answers and closes before reading all of it, and a client still
			// writing (net/http writes in 4 KiB pieces) would see a reset
			// instead of the answer.
			big := "X-Big: " + strings.Repeat("h", 64<<10) + "\r\n"
			for _, req := range []string{
				"GET /v1/keys HTTP/1.1\r\n" + host + "Authorization: Bearer " + n.rootToken + "\r\n" + big + "\r\n",
				"GET /v1/verify HTTP/1.1\r\n" + host + "X-API-Key: " + k.Key + "\r\n" + big + "\r\n",
				"GET /healthz HTTP/1.1\r\n" + host + big + "\r\n",
			} {
				a := n.rawExchange(t, []byte(req), 5*time.Second)
				if a.status != http.StatusRequestHeaderFieldsTooLarge || !a.closed {
					t.Errorf("64 KiB header on %s: %d %s closed=%v (%v)", strings.Fields(req)[1], a.status, a.body, a.closed, a.err)
				}
				if strings.Contains(req, "/v1/keys") && !strings.Contains(a.body, "HEADERS_TOO_LARGE") {
					t.Errorf("64 KiB header on an admin route: %s", a.body)
				}
			}
		}},
		{"invalid JSON", func(t testing.TB) {
			for _, body := range []string{`{"name": "x",`, `{"name" "x"}`, "\x00\xff", `{"name":"x"}]`, `nul`, `{"keys": [}`, `{"a":1}{`} {
				n.do("POST", "/v1/keys", n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("PATCH", path, n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("POST", path+"/rotate", n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("POST", path+"/revoke", n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("POST", "/v1/keys/import", n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("POST", "/v1/verify", "", body).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
			}
		}},
		{"wrong types and unknown fields", func(t testing.TB) {
			check := func(r result, fields ...string) {
				t.Helper()
				r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
				for _, f := range fields {
					if !r.hasDetail(f) {
						t.Errorf("details do not name %s: %s", f, r.Body)
					}
				}
			}
			check(n.do("POST", "/v1/keys", n.rootToken, `{"name": ["x"], "workspace_id": 7, "rate_limit_per_min": "9", "expires_at": 12, "bogus": true, "Name": "x"}`),
				"name", "workspace_id", "rate_limit_per_min", "expires_at", "bogus", "Name")
			check(n.do("POST", "/v1/keys", n.rootToken, `{"name": "x", "workspace_id": "ws_h", "rate_limit_per_min": 1.5, "scopes": [1], "metadata": {"a": {"b": 1}}}`),
				"rate_limit_per_min", "scopes", "metadata")
			check(n.do("PATCH", path, n.rootToken, `{"active": "false", "owner_id": "o", "key": "x"}`), "active", "owner_id", "key")
			check(n.do("POST", path+"/rotate", n.rootToken, `{"grace_period_seconds": 1e9, "extra": 1}`), "grace_period_seconds", "extra")
			check(n.do("POST", path+"/rotate", n.rootToken, `{"grace_period_seconds": 99999999999999999999}`), "grace_period_seconds")
			check(n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": [{"sha256": 5, "name": "x", "workspace_id": "ws_h", "token": "t"}], "dry_run": true}`),
				"keys[0].sha256", "keys[0].token", "dry_run")
			check(n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": {"a": 1}}`), "keys")
			check(n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": [5]}`), "keys[0]")
		}},
		{"times out of range", func(t testing.TB) {
			// Valid RFC 3339 that is past year 9999 once in UTC, and far-future
			// times: a clear 422 or a key that works, never a 500.
			r := n.do("POST", "/v1/keys", n.rootToken, `{"name": "x", "workspace_id": "ws_h", "expires_at": "9999-12-31T23:59:59-23:00"}`)
			r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
			n.do("PATCH", path, n.rootToken, `{"expires_at": "9999-12-31T23:59:59-23:00"}`).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
			sha := strings.Repeat("ab", 32)
			n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": [{"sha256": "`+sha+`", "name": "x", "workspace_id": "ws_h", "created_at": "9999-12-31T23:59:59-23:00"}]}`).
				wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
			n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": [{"sha256": "`+sha+`", "name": "x", "workspace_id": "ws_h", "expires_at": "0000-01-01T00:00:00+01:00"}]}`).
				wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
		}},
		{"token in the query string", func(t testing.TB) {
			for _, q := range []string{"key=", "api_key=", "KEY=", "Api_Key=", "apikey=", "token=", "access_token=", "scope=a&key="} {
				n.do("GET", "/v1/verify?"+q+k.Key, "", nil).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("GET", "/v1/verify?"+q+k.Key, "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
				n.do("POST", "/v1/verify?"+q+k.Key, "", map[string]any{"key": k.Key}).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
			}
			// A token-shaped value under any name is refused too.
			n.do("GET", "/v1/verify?scope="+k.Key, "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
			// Requests fasthttp cannot parse, with the token in the URL and in a header.
			for _, req := range []string{
				"GET /v1/verify?key=" + k.Key + " HTTP/1.1\r\n" + host + "Bad Header\r\n\r\n",
				"GET /v1/verify?key=" + k.Key + "\r\n\r\n",
				"GET /v1/verify?key=" + k.Key + " HTTP/9.9\r\n" + host + "\r\n",
				"BREW /v1/verify?key=" + k.Key + " HTTP/1.1\r\n" + host + "\r\n",
				"GET /v1/verify HTTP/1.1\r\n" + host + "X-API-Key: " + k.Key + "\x01\r\n\r\n",
				"GET /v1/verify HTTP/1.1\r\n" + host + "X-API-Key: " + k.Key + "\r\nContent-Length: -1\r\n\r\n",
				"GET /v1/verify HTTP/1.1\r\n" + host + "X-API-Key: " + k.Key + "\r\nTransfer-Encoding: gzip\r\n\r\n",
				"\x16\x03\x01 " + k.Key + "\r\n\r\n",
			} {
				a := n.rawExchange(t, []byte(req), 2*time.Second)
				if a.status != 0 && a.status != http.StatusBadRequest && a.status != http.StatusMethodNotAllowed {
					t.Errorf("%q: status %d", req, a.status)
				}
			}
			n.do("GET", "/healthz", "", nil).want(t, http.StatusOK)
			if logs := n.logs.Bytes(); bytes.Contains(logs, []byte(k.Key)) || bytes.Contains(logs, []byte(k.Key[8:30])) {
				t.Errorf("the token is in the node's log")
			}
			if !bytes.Contains(n.logs.Bytes(), []byte("error when serving connection")) {
				t.Errorf("the malformed requests were not logged at all; the test does not exercise the logger")
			}
		}},
	}
	// Not subtests: the harness fails the test that started the node.
	for _, c := range cases {
		before := n.mark(k.ID)
		c.run(t)
		n.unchanged(t, c.name, before)
	}
	n.verifyGET(k.Key, "scope=calls:x").wantVerify(t, http.StatusOK, "VALID")
}

// TestExtremeTimes: expiry times beyond what int64 nanoseconds hold (after
// 2262) and the Unix epoch itself keep their meaning on the verify path.
func TestExtremeTimes(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	far, _ := n.secretKey("ws_t", "expires_at", "2300-01-01T00:00:00Z")
	farther, _ := n.secretKey("ws_t", "expires_at", "9999-12-31T23:59:59Z")
	n.verifyGET(far.Key, "").wantVerify(t, http.StatusOK, "VALID")
	n.verifyGET(farther.Key, "").wantVerify(t, http.StatusOK, "VALID")
	_, m := envelope[keyOut](t, n.do("PATCH", "/v1/keys/"+far.ID, n.rootToken, map[string]any{"expires_at": "3000-06-01T00:00:00+14:00"}).want(t, http.StatusOK))
	n.verifyGET(far.Key, minIdx(m.Index)).wantVerify(t, http.StatusOK, "VALID")

	// Imported keys may carry any past expiry, the epoch and 1600 included.
	var items []map[string]any
	tokens := map[string]string{"1970-01-01T00:00:00Z": "legacy-epoch-token", "1600-01-01T00:00:00Z": "legacy-1600-token"}
	for exp, tok := range tokens {
		items = append(items, map[string]any{"sha256": sha(tok), "name": "old", "workspace_id": "ws_t", "expires_at": exp})
	}
	_, m = envelope[map[string]any](t, n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": items}).want(t, http.StatusCreated))
	for _, tok := range tokens {
		n.do("POST", "/v1/verify?"+minIdx(m.Index), "", map[string]any{"key": tok}).wantVerify(t, http.StatusUnauthorized, "KEY_EXPIRED")
	}
}
