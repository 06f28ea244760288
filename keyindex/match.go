package keyindex

import (
	"fmt"
	"iter"
	"net/url"
	"regexp"
	"strings"
)

// Scopes: "segment(:segment)*". A "*" inside a segment (after the first) is a
// glob for any run of characters within that segment; segments never span
// ":" so "calls:*" grants "calls:start" but not "calls:start:now".
var scopeRE = regexp.MustCompile(`^[a-z0-9_.-]+(:[a-z0-9_.*-]+)*$`)

// ValidScope reports whether s is a well-formed scope (spec §2).
func ValidScope(s string) bool { return len(s) <= 128 && scopeRE.MatchString(s) }

func scopesAllow(granted []string, want []byte) bool {
	for _, g := range granted {
		if scopeMatch(g, want) {
			return true
		}
	}
	return false
}

// scopeGrant is a granted scope prepared for matching once, when its key's
// lists are interned: most grants are exact ("calls:start") or a prefix
// and one "*" ("calls:*"), which match in a comparison or two instead of
// scopeMatch's loop. At a million keys a verification waits on two cache
// misses, and the instructions that follow them decide how much of the
// next request's work the CPU can start meanwhile: the general loop there
// made a scoped decision half again as long (bench/README.md).
type scopeGrant struct {
	scope string
	kind  grantKind
}

type grantKind uint8

const (
	grantExact  grantKind = iota // no "*"
	grantPrefix                  // one "*", the last byte
	grantGlob                    // anything else: scopeMatch
)

func newScopeGrant(scope string) scopeGrant {
	switch stars := strings.Count(scope, "*"); {
	case stars == 0:
		return scopeGrant{scope, grantExact}
	case stars == 1 && scope[len(scope)-1] == '*':
		return scopeGrant{scope, grantPrefix}
	}
	return scopeGrant{scope, grantGlob}
}

// allows is scopeMatch(g.scope, want).
func (g *scopeGrant) allows(want []byte) bool {
	switch g.kind {
	case grantExact:
		return string(want) == g.scope
	case grantPrefix:
		// The "*" takes the rest of the request's segment: no ":" in it.
		k := len(g.scope) - 1
		return len(want) >= k && string(want[:k]) == g.scope[:k] && noByte(want[k:], ':')
	}
	return globMatch(g.scope, want)
}

func grantsAllow(granted []scopeGrant, want []byte) bool {
	for i := range granted {
		if granted[i].allows(want) {
			return true
		}
	}
	return false
}

// noByte reports whether b does not occur in s; a loop, which for a
// scope's few bytes beats the call IndexByte makes.
func noByte[S ~string | ~[]byte](s S, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return false
		}
	}
	return true
}

// scopeMatch matches one granted scope against a requested one, for a
// grant not prepared beforehand (scopeGrant).
func scopeMatch(granted string, want []byte) bool {
	g := newScopeGrant(granted)
	return g.allows(want)
}

// globMatch matches a granted scope with "*" in it in one pass. Segments
// line up by their ":" (a "*" never takes a ":", so the k-th ":" of the
// grant can only meet the k-th ":" of the request), and within a segment a
// "*" is a glob for any run of bytes. One backtrack point is enough: a
// later "*" in the same segment can take whatever an earlier one would have,
// and once a ":" has matched the earlier segments are settled. Linear in
// practice and allocation-free, where the segment-by-segment form cost
// twice as much. It backtracks once per byte of a run: scopeGrant matches
// the common "prefix*" without it.
func globMatch(granted string, want []byte) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(want) {
		switch {
		case p < len(granted) && granted[p] == '*':
			star, mark = p, i
			p++
		case p < len(granted) && granted[p] == want[i]:
			p++
			i++
		case star >= 0 && want[mark] != ':':
			// Let the last star take one more byte of its segment.
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(granted) && granted[p] == '*' {
		p++
	}
	return p == len(granted)
}

// NormalizeOrigin checks an allowed origin ("scheme://host[:port]", where the
// host may start with "*." as a wildcard for one or more labels) and returns
// its canonical form: lowercase, default port dropped, as browsers send it.
func NormalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Opaque != "" {
		return "", fmt.Errorf("must be scheme://host[:port] with scheme http or https")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	wild := strings.HasPrefix(host, "*.")
	bare := strings.TrimPrefix(host, "*.")
	if bare == "" || strings.Contains(bare, "*") {
		return "", fmt.Errorf("a wildcard is allowed only as the first label (https://*.example.com)")
	}
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	out := u.Scheme + "://" + host
	if strings.Contains(bare, ":") { // IPv6 literal
		out = u.Scheme + "://[" + host + "]"
		if wild {
			return "", fmt.Errorf("a wildcard cannot be used with an IP address")
		}
	}
	if port != "" {
		out += ":" + port
	}
	return out, nil
}

// originAllowed matches a browser Origin against normalized allowed origins.
// The request origin is compared case-insensitively; a default port in it is
// not stripped, because browsers never send one.
func originAllowed(allowed iter.Seq[string], origin []byte) bool {
	for a := range allowed {
		if wi := strings.Index(a, "://*."); wi >= 0 {
			// "https://*.example.com" matches "https://x.example.com" and
			// "https://x.y.example.com", not "https://example.com".
			scheme, rest := a[:wi+3], a[wi+4:] // rest = ".example.com[:port]"
			if len(origin) <= len(scheme)+len(rest) ||
				!bytesEqualFold(origin[:len(scheme)], scheme) ||
				!bytesEqualFold(origin[len(origin)-len(rest):], rest) {
				continue
			}
			if hostLabels(origin[len(scheme) : len(origin)-len(rest)]) {
				return true
			}
			continue
		}
		if bytesEqualFold(origin, a) {
			return true
		}
	}
	return false
}

// hostLabels reports whether b is one or more host name labels, as a
// browser writes them in an Origin: letters, digits, '-' and '_', joined by
// single dots. Anything else (a '?', an '@', a ':') is no origin a browser
// sends, so it matches no wildcard.
func hostLabels(b []byte) bool {
	if len(b) == 0 || b[0] == '.' || b[len(b)-1] == '.' {
		return false
	}
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.' && b[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

func bytesEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func containsBytes(list iter.Seq[string], b []byte) bool {
	for s := range list {
		if s == string(b) { // the compiler does not allocate for this comparison
			return true
		}
	}
	return false
}
