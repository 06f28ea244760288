package api_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/internal/fuzzseed"
	"github.com/keyraft/keyraft/keyindex"
)

// The API fuzz targets call the real handler (Server.Handle) of a real node
// (Raft on a temp dir) on a fasthttp.RequestCtx, as the server does for a
// request it has read. Inputs may hold placeholders ({{sk}}, {{future}}, …)
// that are replaced by the node's real tokens, ids and times, so that the
// fuzzer reaches the paths behind authentication and validation.

// fuzzCtx builds a request context; hdrs are name, value pairs (empty
// values are left out).
func fuzzCtx(method, uri string, body []byte, hdrs ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost("127.0.0.1")
	for i := 0; i+1 < len(hdrs); i += 2 {
		if hdrs[i+1] != "" {
			req.Header.Set(hdrs[i], hdrs[i+1])
		}
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

// handle runs one request through the node's handler.
func (n *testNode) handle(method, uri string, body []byte, hdrs ...string) *fasthttp.RequestCtx {
	ctx := fuzzCtx(method, uri, body, hdrs...)
	n.srv.Handle(ctx)
	return ctx
}

// fuzzAdmin is the fixed cast of FuzzAdminBodies.
type fuzzAdmin struct {
	n       *testNode
	wsAdmin string // admin key of ws_f (keys:read, keys:write)
	target  string // a secret key of ws_f, recreated when revoked or deleted
	other   string // a secret key of ws_g, invisible to the ws_f admin
}

// ensure recreates the target keys a previous input revoked or deleted.
func (c *fuzzAdmin) ensure(t testing.TB) {
	ix := c.n.node.FSM().Index()
	for _, k := range []struct {
		id *string
		ws string
	}{{&c.target, "ws_f"}, {&c.other, "ws_g"}} {
		if r := ix.Get(*k.id); r != nil && r.RevokedAt == nil {
			continue
		}
		ctx := c.n.handle("POST", "/v1/keys", []byte(`{"name":"target","workspace_id":"`+k.ws+`"}`), "Authorization", "Bearer "+c.n.rootToken)
		var env struct {
			Data keyOut `json:"data"`
		}
		if ctx.Response.StatusCode() != http.StatusCreated || json.Unmarshal(ctx.Response.Body(), &env) != nil {
			t.Fatalf("creating a target key: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		*k.id = env.Data.ID
	}
}

// adminRoutes are the admin writes whose bodies FuzzAdminBodies sends.
var adminRoutes = []struct {
	name, method, path string // path: {id} is the target
}{
	{"create", "POST", "/v1/keys"},
	{"update", "PATCH", "/v1/keys/{id}"},
	{"rotate", "POST", "/v1/keys/{id}/rotate"},
	{"import", "POST", "/v1/keys/import"},
	{"revoke", "POST", "/v1/keys/{id}/revoke"},
	{"delete", "DELETE", "/v1/keys/{id}"},
}

// FuzzAdminBodies sends any body to every admin write (create, update,
// rotate, import, revoke, delete) as the root key or a workspace admin, on a
// key of the caller's workspace, of another workspace, or on no key. It
// checks that the handler never panics and never answers 5xx; that a 2xx
// answer is a well-formed envelope whose data matches the stored state;
// that an error is a well-formed error envelope and changed nothing (FSM
// digest and applied index); and that a workspace admin gets 404 on another
// workspace's key, whatever the body.
//
// route picks the route (route%6); who picks the caller (who%2: root, the
// ws_f admin) and the target ((who/2)%3: own workspace, other workspace,
// missing). Placeholders in body: {{sha}} a new random SHA-256 (hex),
// {{future}} and {{past}} RFC 3339 times an hour away.
func FuzzAdminBodies(f *testing.F) {
	n := startNode(f, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour, quiet: true})
	c := &fuzzAdmin{n: n}
	wsAdmin, _ := n.createKey(n.rootToken, map[string]any{"name": "ws_f admin", "type": "admin", "workspace_id": "ws_f",
		"scopes": []string{"keys:read", "keys:write"}})
	c.wsAdmin = wsAdmin.Key
	c.ensure(f)

	f.Fuzz(func(t *testing.T, route uint8, who uint8, body []byte) {
		c.ensure(t)
		rt := adminRoutes[int(route)%len(adminRoutes)]
		caller, root := c.n.rootToken, true
		if who%2 == 1 {
			caller, root = c.wsAdmin, false
		}
		id := []string{c.target, c.other, "key_01JAAAAAAAAAAAAAAAAAAAAAAA"}[int(who/2)%3]
		body = fillAdminPlaceholders(body)
		path := strings.ReplaceAll(rt.path, "{id}", id)
		ix := n.node.FSM().Index()
		beforeRec := ix.Get(id)
		applied0, digest0 := n.node.FSM().Digest()

		ctx := n.handle(rt.method, path, body, "Authorization", "Bearer "+caller, "X-Request-Id", "fuzz-1")
		status, out := ctx.Response.StatusCode(), ctx.Response.Body()
		applied1, digest1 := n.node.FSM().Digest()
		if status >= 500 {
			t.Fatalf("%s %s with %q: %d %s", rt.method, path, body, status, out)
		}
		if status == http.StatusNoContent {
			if rt.name != "delete" || ix.Get(id) != nil || len(out) != 0 || len(ctx.Response.Header.Peek("Keyraft-Index")) == 0 {
				t.Fatalf("204 from %s: record %v, body %q", rt.name, ix.Get(id), out)
			}
			return
		}
		var env struct {
			Data  json.RawMessage `json:"data"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
				Details []struct {
					Field string `json:"field"`
					Issue string `json:"issue"`
				} `json:"details"`
			} `json:"error"`
			Meta struct {
				RequestID string `json:"request_id"`
				Timestamp string `json:"timestamp"`
				Index     uint64 `json:"index"`
			} `json:"meta"`
		}
		if err := json.Unmarshal(out, &env); err != nil || !utf8.Valid(out) {
			t.Fatalf("%s: answer %d is not JSON: %q", rt.name, status, out)
		}
		if env.Meta.RequestID != "fuzz-1" {
			t.Fatalf("%s: meta.request_id %q", rt.name, env.Meta.RequestID)
		}
		if _, err := time.Parse(time.RFC3339Nano, env.Meta.Timestamp); err != nil {
			t.Fatalf("%s: meta.timestamp %q", rt.name, env.Meta.Timestamp)
		}

		if status >= 300 {
			if env.Error == nil || env.Error.Code == "" || env.Error.Message == "" || env.Data != nil {
				t.Fatalf("%s: error answer %d is not an error envelope: %s", rt.name, status, out)
			}
			for _, d := range env.Error.Details {
				// A member named "" is named so: {"": 1} is an unknown field "".
				if d.Issue == "" || (d.Field == "" && d.Issue != "unknown field") {
					t.Fatalf("%s: detail without field or issue: %s", rt.name, out)
				}
			}
			if status == http.StatusUnprocessableEntity && len(env.Error.Details) == 0 {
				t.Fatalf("%s: 422 names no field: %s", rt.name, out)
			}
			if applied1 != applied0 || digest1 != digest0 || !reflect.DeepEqual(ix.Get(id), beforeRec) {
				t.Fatalf("%s: a %d answer changed the state (applied %d→%d)", rt.name, status, applied0, applied1)
			}
			// Another workspace's key is invisible to a workspace admin.
			if !root && id == c.other && strings.Contains(rt.path, "{id}") && status != http.StatusNotFound {
				t.Fatalf("%s on another workspace's key: %d %s", rt.name, status, out)
			}
			return
		}

		// A success: well-formed, and what it says is what is stored.
		if env.Error != nil || env.Data == nil || env.Meta.Index == 0 || env.Meta.Index > applied1 || applied1 == applied0 {
			t.Fatalf("%s: success %d is malformed (index %d, applied %d→%d): %s", rt.name, status, env.Meta.Index, applied0, applied1, out)
		}
		if !root && id == c.other && strings.Contains(rt.path, "{id}") {
			t.Fatalf("the ws_f admin changed a ws_g key with %s: %s", rt.name, out)
		}
		if rt.name == "import" {
			var data struct {
				Imported int      `json:"imported"`
				IDs      []string `json:"ids"`
			}
			if json.Unmarshal(env.Data, &data) != nil || data.Imported == 0 || data.Imported != len(data.IDs) {
				t.Fatalf("import answer %s", out)
			}
			for _, kid := range data.IDs {
				r := ix.Get(kid)
				if r == nil || !r.Imported || (!root && r.WorkspaceID != "ws_f") {
					t.Fatalf("imported key %s: %+v", kid, r)
				}
			}
			return
		}
		var m map[string]any
		json.Unmarshal(env.Data, &m)
		withKey := rt.name == "create" || rt.name == "rotate"
		checkRecordShape(t, m, withKey)
		var got keyOut
		if err := json.Unmarshal(env.Data, &got); err != nil {
			t.Fatalf("%s: record %s: %v", rt.name, env.Data, err)
		}
		stored := ix.Get(got.ID)
		if stored == nil {
			t.Fatalf("%s: answered key %s is not stored", rt.name, got.ID)
		}
		storedJSON, _ := json.Marshal(stored)
		gotJSON, _ := json.Marshal(got.Record)
		if !bytes.Equal(storedJSON, gotJSON) {
			t.Fatalf("%s: answer and stored record differ:\n%s\n%s", rt.name, gotJSON, storedJSON)
		}
		checkStoredRecord(t, stored)
		if !root && stored.WorkspaceID != "ws_f" {
			t.Fatalf("the ws_f admin wrote into workspace %q", stored.WorkspaceID)
		}
		if withKey {
			if _, err := keyindex.ParseToken([]byte(got.Key)); err != nil || !reflect.DeepEqual(ix.GetByHash(keyindex.HashToken([]byte(got.Key))), stored) {
				t.Fatalf("%s: answered token %q does not belong to the record", rt.name, got.Key)
			}
		}
		if rt.name != "create" && got.ID != id {
			t.Fatalf("%s of %s answered key %s", rt.name, id, got.ID)
		}
		if rt.name == "revoke" && (stored.RevokedAt == nil || stored.Active) {
			t.Fatalf("revoke left %+v", stored)
		}
	})
}

// checkStoredRecord checks the limits of spec §2 on a record the API stored.
func checkStoredRecord(t *testing.T, r *keyindex.Record) {
	t.Helper()
	bad := func(what string) { t.Fatalf("stored record breaks the rules (%s): %+v", what, r) }
	if n := utf8.RuneCountInString(r.Name); n < 1 || n > 120 {
		bad("name")
	}
	if !r.Type.Valid() || !r.Environment.Valid() || r.WorkspaceID == "" || len(r.OwnerID) > 128 {
		bad("type, environment, workspace or owner")
	}
	if len(r.Scopes) > 64 || r.Scopes == nil || r.AllowedOrigins == nil || r.AllowedResources == nil || r.Metadata == nil {
		bad("lists")
	}
	for _, s := range r.Scopes {
		if !keyindex.ValidScope(s) {
			bad("scope " + s)
		}
	}
	if r.Type == keyindex.TypePublishable && len(r.AllowedOrigins) == 0 {
		bad("publishable without origins")
	}
	for _, o := range r.AllowedOrigins {
		if len(o) > 300 {
			bad("origin longer than 300")
		}
	}
	if len(keyindex.AppendRecord(nil, r)) > 1<<20 {
		bad("encoding longer than a snapshot frame")
	}
	size := 0
	for k, v := range r.Metadata {
		size += len(k) + len(v)
	}
	if len(r.Metadata) > 16 || size > 4096 || r.RateLimitPerMin < 0 || r.RateLimitPerMin > keyindex.MaxRateLimitPerMin {
		bad("metadata or rate limit")
	}
	if _, err := json.Marshal(r); err != nil {
		bad("does not encode: " + err.Error())
	}
}

func fillAdminPlaceholders(body []byte) []byte {
	if !bytes.Contains(body, []byte("{{")) {
		return body
	}
	var h [32]byte
	rand.Read(h[:])
	now := time.Now().UTC()
	r := strings.NewReplacer("{{sha}}", hex.EncodeToString(h[:]),
		"{{future}}", now.Add(time.Hour).Format(time.RFC3339), "{{past}}", now.Add(-time.Hour).Format(time.RFC3339))
	return []byte(r.Replace(string(body)))
}

// fuzzVerify is the fixed cast of FuzzVerifyRequest: tokens by placeholder.
type fuzzVerify struct {
	n      *testNode
	tokens map[string]string // placeholder → plaintext
	ids    map[string]string // key id → placeholder of a token that verifies as it
}

// FuzzVerifyRequest sends any verify request, GET (forward-auth) or POST:
// X-API-Key, Authorization and Origin headers, scope, resource and
// min_index in the query (or Keyraft-Min-Index), any further query string,
// and any body. It checks that the handler never panics, answers only 200,
// 400, 401, 403, 429 or 503 with the code the spec gives each status, that
// a VALID answer names a key whose token was in the request, and that
// verification changes no replicated state.
//
// Placeholders in every string and the body: {{sk}} (scopes calls:*,
// resource asst_1), {{pk}} (publishable, origins https://*.example.com),
// {{rk}} (the root key), {{old}} (a rotated key's previous token, in grace),
// {{revoked}}, {{disabled}}, {{limited}} (1 a minute), {{legacy}} (an
// imported token of another format), {{legacy-expired}}. A min_index past
// the applied index is lowered to it: the 1 s wait for a STALE answer
// would only slow the fuzzer down.
func FuzzVerifyRequest(f *testing.F) {
	n := startNode(f, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour, quiet: true})
	c := &fuzzVerify{n: n, tokens: map[string]string{"{{rk}}": n.rootToken}, ids: map[string]string{}}
	add := func(ph string, k keyOut) { c.tokens[ph], c.ids[k.ID] = k.Key, ph }
	sk, _ := n.secretKey("ws_v", "scopes", []string{"calls:*"}, "allowed_resources", []string{"asst_1"}, "metadata", map[string]string{"plan": "pro"})
	add("{{sk}}", sk)
	pk, _ := n.createKey(n.rootToken, map[string]any{"name": "pk", "workspace_id": "ws_v", "type": "publishable", "allowed_origins": []string{"https://*.example.com"}})
	add("{{pk}}", pk)
	rot, _ := n.secretKey("ws_v")
	c.tokens["{{old}}"] = rot.Key
	n.do("POST", "/v1/keys/"+rot.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 86400}).want(f, http.StatusOK)
	c.ids[rot.ID] = "{{old}}"
	rev, _ := n.secretKey("ws_v")
	n.do("POST", "/v1/keys/"+rev.ID+"/revoke", n.rootToken, nil).want(f, http.StatusOK)
	c.tokens["{{revoked}}"] = rev.Key
	dis, _ := n.secretKey("ws_v", "active", false)
	c.tokens["{{disabled}}"] = dis.Key
	lim, _ := n.secretKey("ws_v", "rate_limit_per_min", 1)
	add("{{limited}}", lim)
	c.tokens["{{legacy}}"], c.tokens["{{legacy-expired}}"] = "legacy_token_ABCDEF123", "legacy-expired-token-9"
	imp := n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha("legacy_token_ABCDEF123"), "name": "legacy", "workspace_id": "ws_v"},
		{"sha256": sha("legacy-expired-token-9"), "name": "expired", "workspace_id": "ws_v", "expires_at": "2020-01-01T00:00:00Z"},
	}}).want(f, http.StatusCreated)
	impOut, _ := envelope[importOut](f, imp)
	c.ids[impOut.IDs[0]] = "{{legacy}}"
	pairs := make([]string, 0, 2*len(c.tokens))
	for ph, tok := range c.tokens {
		pairs = append(pairs, ph, tok)
	}
	fill := strings.NewReplacer(pairs...)
	ix := n.node.FSM().Index()
	c.ids[ix.GetByHash(keyindex.HashToken([]byte(n.rootToken))).ID] = "{{rk}}"

	f.Fuzz(func(t *testing.T, post bool, apiKey, authz, origin, scope, resource, minIndex string, minInHeader bool, rawQuery string, body []byte) {
		apiKey, authz, origin, rawQuery = fill.Replace(apiKey), fill.Replace(authz), fill.Replace(origin), fill.Replace(rawQuery)
		scope, resource = fill.Replace(scope), fill.Replace(resource)
		body = []byte(fill.Replace(string(body)))
		applied, digest := n.node.FSM().Digest()
		if v, err := strconv.ParseUint(minIndex, 10, 64); err == nil && v > applied {
			minIndex = strconv.FormatUint(applied, 10)
		}
		var args fasthttp.Args
		for _, kv := range [][2]string{{"scope", scope}, {"resource", resource}, {"min_index", minIndex}} {
			if kv[1] != "" && (kv[0] != "min_index" || !minInHeader) {
				args.Set(kv[0], kv[1])
			}
		}
		q := args.String()
		if rawQuery != "" {
			q += "&" + escapeRawQuery(rawQuery)
		}
		method, reqBody := "GET", []byte(nil)
		if post {
			method, reqBody = "POST", body
		}
		hdrMin := ""
		if minInHeader {
			hdrMin = minIndex
		}
		ctx := n.handle(method, "/v1/verify?"+q, reqBody, "X-API-Key", apiKey, "Authorization", authz, "Origin", origin, "Keyraft-Min-Index", hdrMin)
		status, out := ctx.Response.StatusCode(), ctx.Response.Body()

		var ans struct {
			Valid bool   `json:"valid"`
			Code  string `json:"code"`
			KeyID string `json:"key_id"`
		}
		if err := json.Unmarshal(out, &ans); err != nil {
			t.Fatalf("answer %d is not JSON: %q", status, out)
		}
		codes := map[int][]string{
			200: {"VALID"},
			400: {"BAD_REQUEST"},
			401: {"MALFORMED_KEY", "KEY_NOT_FOUND", "KEY_DISABLED", "KEY_REVOKED", "KEY_EXPIRED"},
			403: {"ORIGIN_NOT_ALLOWED", "INSUFFICIENT_SCOPE", "RESOURCE_NOT_ALLOWED"},
			429: {"RATE_LIMITED"},
			503: {"STALE"},
		}
		if status == 413 && len(reqBody) > 1<<20 {
			return
		}
		ok := false
		for _, code := range codes[status] {
			ok = ok || code == ans.Code
		}
		if !ok || ans.Valid != (status == 200) {
			t.Fatalf("status %d with %s: %s", status, ans.Code, out)
		}
		if status == 429 && len(ctx.Response.Header.Peek("Retry-After")) == 0 {
			t.Fatalf("429 without Retry-After")
		}
		if status == 200 {
			ph, known := c.ids[ans.KeyID]
			sent := apiKey + "\x00" + authz + "\x00" + string(reqBody)
			if !known || string(ctx.Response.Header.Peek("Keyraft-Key-Id")) != ans.KeyID || ix.Get(ans.KeyID) == nil ||
				!strings.Contains(sent, c.tokens[ph]) {
				t.Fatalf("VALID for key %s, whose token was not sent: %s", ans.KeyID, out)
			}
		}
		if a, d := n.node.FSM().Digest(); a != applied || d != digest {
			t.Fatalf("verification changed the replicated state")
		}
	})
}

// escapeRawQuery percent-encodes what cannot stand in a request line
// (controls, spaces, non-ASCII) and '#', as a client would; the rest of the
// fuzzed query string (%, &, =, …) stays raw for the query parser.
func escapeRawQuery(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c >= 0x7f || c == '#' {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// TestWriteAPIFuzzSeeds rewrites testdata/fuzz/FuzzAdminBodies and
// FuzzVerifyRequest with KEYRAFT_WRITE_SEEDS=1 (docs/testing.md).
func TestWriteAPIFuzzSeeds(t *testing.T) {
	if !fuzzseed.Enabled() {
		t.Skip("set KEYRAFT_WRITE_SEEDS=1 to rewrite the seed corpora")
	}
	for _, target := range []string{"FuzzAdminBodies", "FuzzVerifyRequest"} {
		if err := fuzzseed.Reset(target); err != nil {
			t.Fatal(err)
		}
	}
	admin := func(name string, route, who uint8, body string) {
		if err := fuzzseed.Write("FuzzAdminBodies", name, route, who, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// route: 0 create, 1 update, 2 rotate, 3 import, 4 revoke, 5 delete.
	// who: bit 0 = the ws_f admin; who/2 = 0 own key, 1 other workspace, 2 missing.
	for name, body := range map[string]string{
		"full":          `{"name":"k","workspace_id":"ws_f","owner_id":"o1","type":"secret","environment":"test","scopes":["calls:*","a.b-c_d:e"],"allowed_origins":["https://*.example.com"],"allowed_resources":["r1"],"rate_limit_per_min":60,"metadata":{"plan":"pro"},"active":true,"expires_at":"{{future}}","workspace_prefix":"acme"}`,
		"publishable":   `{"name":"p","workspace_id":"ws_f","type":"publishable","allowed_origins":["HTTPS://App.Example.com:443"]}`,
		"admin":         `{"name":"a","workspace_id":"ws_f","type":"admin","scopes":["keys:read"]}`,
		"root-admin":    `{"name":"a","workspace_id":"*","type":"admin","scopes":["keys:read"]}`,
		"minimal":       `{"name":"m"}`,
		"past-expiry":   `{"name":"m","workspace_id":"ws_f","expires_at":"{{past}}"}`,
		"far-expiry":    `{"name":"m","workspace_id":"ws_f","expires_at":"2300-01-01T00:00:00Z"}`,
		"offset-expiry": `{"name":"m","workspace_id":"ws_f","expires_at":"9999-12-31T23:59:59-23:59"}`,
		"wrong-types":   `{"name":5,"workspace_id":[],"scopes":"x","active":"yes","metadata":{"a":1},"rate_limit_per_min":1.5,"expires_at":"tomorrow"}`,
		"unknown":       `{"name":"m","workspace_id":"ws_f","bogus":1,"Name":"x"}`,
		"nulls":         `{"name":null,"workspace_id":null,"owner_id":null,"expires_at":null,"scopes":null}`,
		"bad-values":    `{"name":"","workspace_id":"bad ws!","type":"x","environment":"prod","scopes":["Bad"],"allowed_origins":["ftp://x"],"allowed_resources":[""],"rate_limit_per_min":-1,"metadata":{"":"v"}}`,
		"not-json":      `{"name":`,
		"array":         `[]`,
		"empty":         ``,
		"unicode-name":  `{"name":"\u00e9\ud83d\ude00\u0000","workspace_id":"ws_f"}`,
		"huge-number":   `{"name":"m","workspace_id":"ws_f","rate_limit_per_min":1e400}`,
	} {
		admin("create-"+name, 0, 0, body)
		admin("create-ws-"+name, 0, 1, body)
	}
	for name, body := range map[string]string{
		"all":         `{"name":"n","scopes":["a:b"],"allowed_origins":["https://a.example.com"],"allowed_resources":["r"],"rate_limit_per_min":5,"metadata":{"k":"v"},"active":false,"expires_at":"{{future}}"}`,
		"clear":       `{"expires_at":null}`,
		"empty":       `{}`,
		"none":        ``,
		"wrong-types": `{"name":1,"active":"no","metadata":[],"expires_at":5}`,
		"readonly":    `{"type":"admin","workspace_id":"ws_g","owner_id":"o","key":"x","id":"key_x"}`,
		"offset":      `{"expires_at":"9999-12-31T23:59:59-23:59"}`,
	} {
		for who := range uint8(6) {
			admin("update-"+name+"-"+strconv.Itoa(int(who)), 1, who, body)
		}
	}
	for name, body := range map[string]string{"grace": `{"grace_period_seconds":60}`, "none": ``, "zero": `{"grace_period_seconds":0}`,
		"too-long": `{"grace_period_seconds":2592001}`, "string": `{"grace_period_seconds":"60"}`, "float": `{"grace_period_seconds":1.5}`} {
		for who := range uint8(6) {
			admin("rotate-"+name+"-"+strconv.Itoa(int(who)), 2, who, body)
		}
	}
	for name, body := range map[string]string{
		"one":         `{"keys":[{"sha256":"{{sha}}","name":"i","workspace_id":"ws_f","key_prefix":"sk_live_","key_suffix":"abcd","created_at":"2023-05-01T12:00:00Z","expires_at":"{{past}}"}]}`,
		"two":         `{"keys":[{"sha256":"{{sha}}","name":"i","workspace_id":"ws_f"},{"sha256":"{{sha}}","name":"j","workspace_id":"ws_f","metadata":{"a":"b"}}]}`,
		"dup":         `{"keys":[{"sha256":"` + strings.Repeat("ab", 32) + `","name":"i","workspace_id":"ws_f"},{"sha256":"` + strings.Repeat("ab", 32) + `","name":"j","workspace_id":"ws_f"}]}`,
		"bad":         `{"keys":[{"sha256":"XYZ","name":"","workspace_id":"ws_f","token":"t"},5,null],"dry_run":true}`,
		"created-off": `{"keys":[{"sha256":"{{sha}}","name":"i","workspace_id":"ws_f","created_at":"9999-12-31T23:59:59-23:59"}]}`,
		"other-ws":    `{"keys":[{"sha256":"{{sha}}","name":"i","workspace_id":"ws_g"}]}`,
		"empty":       `{"keys":[]}`,
		"not-array":   `{"keys":{}}`,
	} {
		admin("import-"+name, 3, 0, body)
		admin("import-ws-"+name, 3, 1, body)
	}
	for who := range uint8(6) {
		admin("revoke-"+strconv.Itoa(int(who)), 4, who, ``)
		admin("revoke-body-"+strconv.Itoa(int(who)), 4, who, `{"reason":"x"}`)
		admin("delete-"+strconv.Itoa(int(who)), 5, who, ``)
	}

	verify := func(name string, post bool, apiKey, authz, origin, scope, resource, minIndex string, minInHeader bool, rawQuery, body string) {
		if err := fuzzseed.Write("FuzzVerifyRequest", name, post, apiKey, authz, origin, scope, resource, minIndex, minInHeader, rawQuery, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	verify("get-valid", false, "{{sk}}", "", "", "calls:start", "asst_1", "1", false, "", "")
	verify("get-bearer", false, "", "Bearer {{sk}}", "", "calls:start", "", "", false, "", "")
	verify("get-bearer-case", false, "", "bEaReR   {{sk}}  ", "", "", "", "", false, "", "")
	verify("get-both", false, "{{pk}}", "Bearer {{sk}}", "https://a.example.com", "", "", "", false, "", "")
	verify("get-scope", false, "{{sk}}", "", "", "files:read", "", "", false, "", "")
	verify("get-resource", false, "{{sk}}", "", "", "", "asst_2", "", false, "", "")
	verify("get-pk-origin", false, "{{pk}}", "", "https://app.example.com", "", "", "", false, "", "")
	verify("get-pk-no-origin", false, "{{pk}}", "", "", "", "", "", false, "", "")
	verify("get-pk-bad-origin", false, "{{pk}}", "", "https://example.com.evil", "", "", "", false, "", "")
	verify("get-old", false, "{{old}}", "", "", "", "", "", false, "", "")
	verify("get-revoked", false, "{{revoked}}", "", "", "", "", "", false, "", "")
	verify("get-disabled", false, "{{disabled}}", "", "", "", "", "", false, "", "")
	verify("get-limited", false, "{{limited}}", "", "", "", "", "", false, "", "")
	verify("get-legacy", false, "{{legacy}}", "", "", "", "", "", false, "", "")
	verify("get-legacy-expired", false, "{{legacy-expired}}", "", "", "", "", "", false, "", "")
	verify("get-root", false, "{{rk}}", "", "", "keys:write", "", "", false, "", "")
	verify("get-malformed", false, "sk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", "", "", "", "", false, "", "")
	verify("get-none", false, "", "", "", "", "", "", false, "", "")
	verify("get-basic", false, "", "Basic {{sk}}", "", "", "", "", false, "", "")
	verify("get-min-index-bad", false, "{{sk}}", "", "", "", "", "abc", false, "", "")
	verify("get-min-index-header", false, "{{sk}}", "", "", "", "", "2", true, "", "")
	verify("get-min-index-huge", false, "{{sk}}", "", "", "", "", "99999999999999999999999", false, "", "")
	verify("get-key-in-query", false, "", "", "", "", "", "", false, "key={{sk}}", "")
	verify("get-key-in-query-case", false, "{{sk}}", "", "", "", "", "", false, "API_KEY={{sk}}", "")
	verify("get-token-value", false, "{{sk}}", "", "", "", "", "", false, "x={{sk}}", "")
	verify("get-odd-query", false, "{{sk}}", "", "", "", "", "", false, "scope&scope=a&%zz=1&=&&", "")
	verify("get-long-key", false, strings.Repeat("k", 600), "", "", "", "", "", false, "", "")
	verify("post-valid", true, "", "", "", "", "", "", false, "", `{"key":"{{sk}}","scope":"calls:x","resource":"asst_1","origin":null}`)
	verify("post-pk", true, "", "", "https://a.example.com", "", "", "", false, "", `{"key":"{{pk}}"}`)
	verify("post-pk-body-origin", true, "", "", "https://evil.com", "", "", "", false, "", `{"key":"{{pk}}","origin":"https://a.example.com"}`)
	verify("post-unknown-field", true, "", "", "", "", "", "", false, "", `{"key":"{{sk}}","extra":1}`)
	verify("post-types", true, "", "", "", "", "", "", false, "", `{"key":5}`)
	verify("post-not-json", true, "", "", "", "", "", "", false, "", `{"key":`)
	verify("post-array", true, "", "", "", "", "", "", false, "", `["{{sk}}"]`)
	verify("post-dup", true, "", "", "", "", "", "", false, "", `{"key":"x","key":"{{sk}}"}`)
	verify("post-escaped", true, "", "", "", "", "", "", false, "", `{"key":"\u0073k_live_x"}`)
	verify("post-header-key", true, "{{sk}}", "", "", "", "", "", false, "", `{}`)
	verify("post-query-key", true, "", "", "", "", "", "", false, "key={{sk}}", `{"key":"{{sk}}"}`)
	verify("post-empty", true, "", "", "", "", "", "", false, "", ``)
}
