package keyindex

import (
	"slices"
	"strings"
	"testing"
)

func TestScopeMatching(t *testing.T) {
	for _, tc := range []struct {
		granted []string
		want    string
		ok      bool
	}{
		{[]string{"calls:start"}, "calls:start", true},
		{[]string{"calls:start"}, "calls:stop", false},
		{[]string{"calls:start"}, "calls:start:now", false},
		{[]string{"calls:start"}, "calls", false},
		{[]string{"calls:start"}, "calls:star", false},
		{[]string{"calls:start"}, "calls:startx", false},
		{[]string{"calls"}, "calls", true},
		{[]string{"calls"}, "calls:start", false},
		{[]string{"calls:*"}, "calls:start", true},
		{[]string{"calls:*"}, "calls:stop", true},
		{[]string{"calls:*"}, "calls:start:now", false},
		{[]string{"calls:*"}, "call:start", false},
		{[]string{"calls:*"}, "callsx:start", false},
		{[]string{"calls:*"}, "calls", false},
		{[]string{"calls:*:*"}, "calls:start:now", true},
		{[]string{"calls:*:*"}, "calls:start", false},
		{[]string{"calls:*:now"}, "calls:start:now", true},
		{[]string{"calls:*:now"}, "calls:start:later", false},
		{[]string{"calls:st*"}, "calls:start", true},
		{[]string{"calls:st*"}, "calls:stop", true},
		{[]string{"calls:st*"}, "calls:st", true},
		{[]string{"calls:st*"}, "calls:s", false},
		{[]string{"calls:st*"}, "calls:restart", false},
		{[]string{"calls:st*"}, "calls:start:now", false},
		{[]string{"calls:*rt"}, "calls:start", true},
		{[]string{"calls:*rt"}, "calls:restart", true},
		{[]string{"calls:*rt"}, "calls:starts", false},
		{[]string{"calls:s*t"}, "calls:start", true},
		{[]string{"calls:s*t"}, "calls:st", true},
		{[]string{"calls:s*t"}, "calls:stop", false},
		{[]string{"calls:*a*"}, "calls:start", true},
		{[]string{"calls:*a*"}, "calls:stop", false},
		{[]string{"calls:a*a*a"}, "calls:aaaaa", true},
		{[]string{"calls:a*a*a"}, "calls:aa", false},
		{[]string{"calls:a*b"}, "calls:aXbXb", true},
		{[]string{"calls:a*b"}, "calls:aXbXc", false},
		{[]string{"calls:**"}, "calls:x", true},
		{[]string{}, "calls:start", false},
		{nil, "calls:start", false},
		{[]string{"files:read", "calls:*"}, "calls:start", true},
		{[]string{"files:read", "calls:stop"}, "calls:start", false},
		{[]string{"keys:read", "keys:write"}, "keys:write", true},
		// '*' has no meaning in the request: it is matched literally.
		{[]string{"calls:start"}, "calls:*", false},
		{[]string{"calls:*"}, "calls:*", true},
	} {
		r := &Record{Scopes: tc.granted}
		if got := r.HasScope(tc.want); got != tc.ok {
			t.Errorf("scopes %q grant %q = %v, want %v", tc.granted, tc.want, got, tc.ok)
		}
		if got := scopesAllow(tc.granted, []byte(tc.want)); got != tc.ok {
			t.Errorf("scopesAllow(%q, %q) = %v, want %v", tc.granted, tc.want, got, tc.ok)
		}
	}
}

func TestScopeMatchPathological(t *testing.T) {
	// Many stars against a long non-matching input must finish quickly.
	granted := "calls:" + strings.Repeat("a*", 30) + "b"
	want := []byte("calls:" + strings.Repeat("a", 120))
	if scopeMatch(granted, want) {
		t.Fatal("matched")
	}
	if !scopeMatch(granted, append(want, 'b')) {
		t.Fatal("did not match")
	}
}

// TestScopeMatchAgainstSegments checks the one-pass scopeMatch against the
// plain definition (split both at ":", same number of segments, each
// segment a glob match) on every grant and request of up to 5 bytes over
// an alphabet that makes segments, stars and near-misses common.
func TestScopeMatchAgainstSegments(t *testing.T) {
	alphabet := []byte("ab:*")
	var all []string
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		all = append(all, string(prefix))
		if len(prefix) == 5 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c))
		}
	}
	gen(nil)
	kinds := map[grantKind]int{}
	for _, g := range all {
		grant := newScopeGrant(g)
		kinds[grant.kind]++
		for _, w := range all {
			want := segmentScopeMatch(g, w)
			if got := scopeMatch(g, []byte(w)); got != want {
				t.Fatalf("scopeMatch(%q, %q) = %v, the segment-wise definition says %v", g, w, got, want)
			}
			// The prepared grant the verify path matches with.
			if got := grant.allows([]byte(w)); got != want {
				t.Fatalf("grant %q (kind %d) allows %q = %v, the segment-wise definition says %v", g, grant.kind, w, got, want)
			}
		}
	}
	if kinds[grantExact] == 0 || kinds[grantPrefix] == 0 || kinds[grantGlob] == 0 {
		t.Fatalf("grant kinds not all covered: %v", kinds)
	}
}

// segmentScopeMatch is the definition scopeMatch implements, written the
// obvious way: an oracle for the test, not fast.
func segmentScopeMatch(granted, want string) bool {
	gs, ws := strings.Split(granted, ":"), strings.Split(want, ":")
	if len(gs) != len(ws) {
		return false
	}
	for i := range gs {
		if !globOracle(gs[i], ws[i]) {
			return false
		}
	}
	return true
}

// globOracle: pattern, where "*" is any run of bytes, matches s. Recursive.
func globOracle(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	if pattern[0] == '*' {
		for k := 0; k <= len(s); k++ {
			if globOracle(pattern[1:], s[k:]) {
				return true
			}
		}
		return false
	}
	return s != "" && s[0] == pattern[0] && globOracle(pattern[1:], s[1:])
}

func TestValidScope(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"calls", true},
		{"calls:start", true},
		{"calls:*", true},
		{"calls:st*", true},
		{"calls:*:now", true},
		{"keys:read", true},
		{"a.b-c_d:e.f-g_h", true},
		{"v1:calls:start", true},
		{"0:1", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"*", false},
		{"*:calls", false},
		{"call*:start", false},
		{"Calls", false},
		{"calls:Start", false},
		{"calls:", false},
		{":calls", false},
		{"calls::start", false},
		{"calls start", false},
		{"calls/start", false},
		{"calls:start\n", false},
		{"callé", false},
	} {
		if got := ValidScope(tc.s); got != tc.ok {
			t.Errorf("ValidScope(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"https://example.com", "https://example.com"},
		{"http://example.com", "http://example.com"},
		{"https://EXAMPLE.com", "https://example.com"},
		{"HTTPS://Example.COM", "https://example.com"},
		{"https://example.com:443", "https://example.com"},
		{"http://example.com:80", "http://example.com"},
		{"https://example.com:80", "https://example.com:80"},
		{"http://example.com:443", "http://example.com:443"},
		{"https://example.com:8443", "https://example.com:8443"},
		{"http://localhost:3000", "http://localhost:3000"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://[::1]", "http://[::1]"},
		{"https://[2001:DB8::1]:443", "https://[2001:db8::1]"},
		{"https://*.example.com", "https://*.example.com"},
		{"https://*.Example.com:443", "https://*.example.com"},
		{"https://*.example.com:8443", "https://*.example.com:8443"},
		{"http://*.localhost:3000", "http://*.localhost:3000"},
		{"https://a.b.example.com", "https://a.b.example.com"},
	} {
		got, err := NormalizeOrigin(tc.in)
		if err != nil {
			t.Errorf("NormalizeOrigin(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("NormalizeOrigin(%q) = %q, want %q", tc.in, got, tc.want)
		}
		// Normalizing is idempotent.
		if again, err := NormalizeOrigin(got); err != nil || again != got {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; not idempotent", got, again, err)
		}
	}
	for _, bad := range []string{
		"",
		"example.com",
		"//example.com",
		"https://",
		"https://example.com/",
		"https://example.com/path",
		"https://example.com?x=1",
		"https://example.com#frag",
		"ftp://example.com",
		"ws://example.com",
		"file:///etc/passwd",
		"javascript:alert(1)",
		"https:example.com",
		"https://user@example.com",
		"https://user:pass@example.com",
		"https://a.*.example.com",
		"https://ex*ample.com",
		"https://example.*",
		"https://*example.com",
		"https://*",
		"https://*.",
		"https://*.*.example.com",
		"https://*.[::1]",
		"https://example.com:abc",
		"https://exa mple.com",
		"null",
		"*",
	} {
		if got, err := NormalizeOrigin(bad); err == nil {
			t.Errorf("NormalizeOrigin(%q) = %q, want error", bad, got)
		}
	}
}

func TestOriginAllowed(t *testing.T) {
	norm := func(t *testing.T, list ...string) []string {
		t.Helper()
		out := make([]string, len(list))
		for i, o := range list {
			n, err := NormalizeOrigin(o)
			if err != nil {
				t.Fatalf("NormalizeOrigin(%q): %v", o, err)
			}
			out[i] = n
		}
		return out
	}
	for _, tc := range []struct {
		allowed []string
		origin  string
		ok      bool
	}{
		{[]string{"https://example.com"}, "https://example.com", true},
		{[]string{"https://example.com"}, "https://EXAMPLE.COM", true},
		{[]string{"HTTPS://Example.com"}, "https://example.com", true},
		{[]string{"https://example.com"}, "http://example.com", false},
		{[]string{"https://example.com"}, "https://example.com:8443", false},
		{[]string{"https://example.com"}, "https://a.example.com", false},
		{[]string{"https://example.com"}, "https://example.com.evil.com", false},
		{[]string{"https://example.com"}, "https://example.co", false},
		{[]string{"https://example.com"}, "https://example.com/", false},
		{[]string{"https://example.com"}, "", false},
		{[]string{"https://example.com"}, "null", false},
		{[]string{"https://example.com:443"}, "https://example.com", true},
		{[]string{"https://example.com:8443"}, "https://example.com:8443", true},
		{[]string{"https://example.com:8443"}, "https://example.com", false},
		{[]string{"https://example.com:8443"}, "https://example.com:9443", false},
		{[]string{"http://localhost:3000"}, "http://localhost:3000", true},
		{[]string{"http://localhost:3000"}, "http://localhost:3001", false},
		{[]string{"https://*.example.com"}, "https://a.example.com", true},
		{[]string{"https://*.example.com"}, "https://A.Example.COM", true},
		{[]string{"https://*.example.com"}, "https://a.b.example.com", true},
		{[]string{"https://*.example.com"}, "https://example.com", false},
		{[]string{"https://*.example.com"}, "https://.example.com", false},
		{[]string{"https://*.example.com"}, "http://a.example.com", false},
		{[]string{"https://*.example.com"}, "https://a.example.com.evil.com", false},
		{[]string{"https://*.example.com"}, "https://aexample.com", false},
		{[]string{"https://*.example.com"}, "https://evil.com/.example.com", false},
		{[]string{"https://*.example.com"}, "https://evil.com:1.example.com", false},
		{[]string{"https://*.example.com"}, "https://evil.com?.example.com", false},
		{[]string{"https://*.example.com"}, "https://x@a.example.com", false},
		{[]string{"https://*.example.com"}, "https://a..example.com", false},
		{[]string{"https://*.example.com"}, "https://..example.com", false},
		{[]string{"https://*.example.com"}, "https://a b.example.com", false},
		{[]string{"https://*.example.com"}, "https://xn--bcher-kva.example.com", true},
		{[]string{"https://*.example.com"}, "https://my_host-1.example.com", true},
		{[]string{"https://*.example.com"}, "https://a.example.com:8443", false},
		{[]string{"https://*.example.com"}, "https://a.example.com:443", false},
		{[]string{"https://*.example.com"}, "ftp://a.example.com", false},
		{[]string{"https://*.example.com"}, "", false},
		{[]string{"https://*.example.com:8443"}, "https://a.example.com:8443", true},
		{[]string{"https://*.example.com:8443"}, "https://a.b.example.com:8443", true},
		{[]string{"https://*.example.com:8443"}, "https://a.example.com", false},
		{[]string{"https://*.example.com:8443"}, "https://a.example.com:9443", false},
		{[]string{"https://*.example.com:8443"}, "https://example.com:8443", false},
		{[]string{"http://*.localhost:3000"}, "http://app.localhost:3000", true},
		{[]string{"https://a.example", "https://*.example.com"}, "https://x.example.com", true},
		{[]string{"https://a.example", "https://*.example.com"}, "https://a.example", true},
		{[]string{"https://a.example", "https://*.example.com"}, "https://b.example", false},
		{nil, "https://example.com", false},
	} {
		t.Run("", func(t *testing.T) {
			allowed := norm(t, tc.allowed...)
			if got := originAllowed(slices.Values(allowed), []byte(tc.origin)); got != tc.ok {
				t.Errorf("originAllowed(%q, %q) = %v, want %v", allowed, tc.origin, got, tc.ok)
			}
		})
	}
}

func TestOriginOK(t *testing.T) {
	allowed := []string{"https://app.example.com", "https://*.example.org"}
	for _, tc := range []struct {
		typ     KeyType
		allowed []string
		origin  string
		ok      bool
	}{
		{TypePublishable, allowed, "", false},
		{TypePublishable, allowed, "https://app.example.com", true},
		{TypePublishable, allowed, "https://x.example.org", true},
		{TypePublishable, allowed, "https://evil.com", false},
		{TypePublishable, nil, "", false},
		{TypePublishable, nil, "https://app.example.com", false},
		{TypeSecret, nil, "", true},
		{TypeSecret, nil, "https://anything.com", true},
		{TypeSecret, allowed, "", true},
		{TypeSecret, allowed, "https://app.example.com", true},
		{TypeSecret, allowed, "https://evil.com", false},
		{TypeAdmin, allowed, "https://evil.com", false},
		{TypeAdmin, allowed, "", true},
	} {
		r := &Record{Type: tc.typ, AllowedOrigins: tc.allowed}
		if got := originOK(viewOf(r).origins, tc.typ == TypePublishable, []byte(tc.origin)); got != tc.ok {
			t.Errorf("originOK(%s, %q, %q) = %v, want %v", tc.typ, tc.allowed, tc.origin, got, tc.ok)
		}
	}
}

func TestContainsBytes(t *testing.T) {
	list := []string{"asst_1", "asst_2"}
	in := func(l []string, b string) bool { return containsBytes(slices.Values(l), []byte(b)) }
	if !in(list, "asst_2") || in(list, "asst_3") || in(list, "asst_") || in(nil, "x") {
		t.Fatal("containsBytes wrong")
	}
}

// viewOf is the in-place view of r as the index stores it.
func viewOf(r *Record) *view {
	v := readView(AppendRecord(nil, r))
	return &v
}
