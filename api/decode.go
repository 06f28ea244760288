package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/keyindex"
)

// field is one JSON member a request body may carry.
type field struct {
	target   any  // pointer to decode into
	nullable bool // null is a meaningful value (clears it)
	present  bool // set by decodeObject
	null     bool // set by decodeObject
}

// decodeObject reads a JSON object strictly: unknown members and members of
// the wrong type are each reported as a FieldError, so one answer lists every
// bad field. A body that is not a JSON object at all is a 400.
func decodeObject(body []byte, prefix string, fields map[string]*field) ([]FieldError, *apiError) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, newError(fasthttp.StatusBadRequest, codeBadRequest, "the body must be a JSON object")
	}
	return decodeMembers(raw, prefix, fields), nil
}

func decodeMembers(raw map[string]json.RawMessage, prefix string, fields map[string]*field) []FieldError {
	var bad []FieldError
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.Sort(names) // stable order of details
	for _, name := range names {
		f, ok := fields[name]
		if !ok {
			bad = append(bad, FieldError{prefix + name, "unknown field"})
			continue
		}
		f.present = true
		if string(raw[name]) == "null" {
			f.null = true
			if !f.nullable {
				bad = append(bad, FieldError{prefix + name, "must not be null"})
			}
			continue
		}
		if err := json.Unmarshal(raw[name], f.target); err != nil {
			bad = append(bad, FieldError{prefix + name, typeIssue(f.target)})
			continue
		}
		if t, ok := f.target.(*time.Time); ok && !storableTime(*t) {
			bad = append(bad, FieldError{prefix + name, "must be between years 0000 and 9999 in UTC"})
		}
	}
	return bad
}

// storableTime reports whether t can be kept: times are stored in UTC, and
// JSON (commands, snapshots, answers) holds only four-digit years, so an
// offset must not carry a time past either end ("9999-12-31T23:00:00-05:00").
func storableTime(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

func typeIssue(target any) string {
	switch target.(type) {
	case *string:
		return "must be a string"
	case *[]string:
		return "must be an array of strings"
	case *int, *int64:
		return "must be an integer"
	case *bool:
		return "must be true or false"
	case *map[string]string:
		return "must be an object whose values are strings"
	case *time.Time:
		return "must be an RFC 3339 time"
	}
	return fmt.Sprintf("has the wrong type (%T)", target)
}

var (
	workspaceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	hexHashRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Limits of record fields (spec §2).
const (
	maxName        = 120
	maxOwnerID     = 128
	maxScopes      = 64
	maxOrigins     = 64
	maxResources   = 256
	maxResourceLen = 256
	// maxOriginLen is above the longest origin a browser sends: https://, a
	// 253-character host name and :65535 (267). Bounded, so that a record
	// stays far under a snapshot's frame (fsm: 1 MiB) and an index chunk.
	maxOriginLen     = 300
	maxMetadata      = 16
	maxMetadataBytes = 4096
	maxGraceSeconds  = 2_592_000 // 30 days
)

// checker collects field errors of one request.
type checker struct {
	bad     []FieldError
	seen    map[string]bool // the fields in bad
	dropped int             // errors past maxFieldErrors
}

// maxFieldErrors bounds the details of one answer: an import of 10,000
// items, each with a hundred unknown members, would otherwise be answered
// with a million of them.
const maxFieldErrors = 1000

// add reports a bad field once: a member of the wrong type is reported as
// such, not again by the value checks that then see its zero value.
func (c *checker) add(field, issue string) {
	if c.seen == nil {
		c.seen = make(map[string]bool, len(c.bad))
		for _, b := range c.bad {
			c.seen[b.Field] = true
		}
	}
	switch {
	case c.seen[field]:
	case len(c.bad) >= maxFieldErrors:
		c.dropped++
	default:
		c.seen[field] = true
		c.bad = append(c.bad, FieldError{field, issue})
	}
}

// details are the errors to answer with, sorted by field (compareFields):
// the first maxFieldErrors found, then one that counts the rest.
func (c *checker) details() []FieldError {
	slices.SortStableFunc(c.bad, func(a, b FieldError) int { return compareFields(a.Field, b.Field) })
	if c.dropped == 0 {
		return c.bad
	}
	return append(c.bad, FieldError{"body", fmt.Sprintf("%d more bad fields are not listed", c.dropped)})
}

// compareFields orders field names as a reader looks for them: by their
// bytes, except that runs of digits (an item's index) compare by value, so
// that keys[2].name comes before keys[10].name.
func compareFields(a, b string) int {
	for a != "" && b != "" {
		if da, db := digitRun(a), digitRun(b); da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Or(cmp.Compare(len(na), len(nb)), strings.Compare(na, nb)); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

// digitRun is the length of the run of ASCII digits s starts with.
func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func (c *checker) name(field, v string) {
	if n := len([]rune(v)); n < 1 || n > maxName {
		c.add(field, fmt.Sprintf("must be 1 to %d characters", maxName))
	}
}

func (c *checker) ownerID(field, v string) {
	if len(v) > maxOwnerID {
		c.add(field, fmt.Sprintf("must be at most %d characters", maxOwnerID))
	}
}

func (c *checker) workspaceID(field, v string) {
	if !workspaceRE.MatchString(v) {
		c.add(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
	}
}

func (c *checker) scopes(field string, v []string, t keyindex.KeyType) {
	if len(v) > maxScopes {
		c.add(field, fmt.Sprintf("at most %d scopes", maxScopes))
		return
	}
	for i, s := range v {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case !keyindex.ValidScope(s):
			c.add(f, "must match ^[a-z0-9_.-]+(:[a-z0-9_.*-]+)*$")
		case t == keyindex.TypeAdmin && !isAdminScope(s):
			c.add(f, "admin keys carry only admin scopes: keys:read, keys:write, cluster:read, cluster:write, audit:read")
		case t == keyindex.TypePublishable && isAdminScope(s):
			c.add(f, "publishable keys cannot hold admin scopes")
		}
	}
}

func isAdminScope(s string) bool {
	for _, a := range keyindex.AdminScopes {
		if s == a {
			return true
		}
	}
	return false
}

// origins checks and normalizes allowed origins in place.
func (c *checker) origins(field string, v []string, t keyindex.KeyType) {
	if t == keyindex.TypePublishable && len(v) == 0 {
		c.add(field, "required and non-empty for publishable keys")
	}
	if len(v) > maxOrigins {
		c.add(field, fmt.Sprintf("at most %d origins", maxOrigins))
		return
	}
	tooLong := fmt.Sprintf("must be at most %d bytes", maxOriginLen)
	for i, o := range v {
		if len(o) > maxOriginLen {
			c.add(fmt.Sprintf("%s[%d]", field, i), tooLong)
			continue
		}
		n, err := keyindex.NormalizeOrigin(o)
		if err != nil {
			c.add(fmt.Sprintf("%s[%d]", field, i), err.Error())
			continue
		}
		if len(n) > maxOriginLen { // lowercasing lengthens some non-ASCII letters
			c.add(fmt.Sprintf("%s[%d]", field, i), tooLong)
			continue
		}
		v[i] = n
	}
}

func (c *checker) resources(field string, v []string) {
	if len(v) > maxResources {
		c.add(field, fmt.Sprintf("at most %d resources", maxResources))
		return
	}
	for i, r := range v {
		if r == "" || len(r) > maxResourceLen {
			c.add(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("must be 1 to %d characters", maxResourceLen))
		}
	}
}

func (c *checker) rateLimit(field string, v int) {
	if v < 0 || v > keyindex.MaxRateLimitPerMin {
		c.add(field, fmt.Sprintf("must be 0 (unlimited) to %d", keyindex.MaxRateLimitPerMin))
	}
}

func (c *checker) metadata(field string, v map[string]string) {
	if len(v) > maxMetadata {
		c.add(field, fmt.Sprintf("at most %d entries", maxMetadata))
	}
	size := 0
	for k, val := range v {
		size += len(k) + len(val)
		if k == "" {
			c.add(field, "keys must not be empty")
		}
	}
	if size > maxMetadataBytes {
		c.add(field, fmt.Sprintf("at most %d bytes of keys and values in all", maxMetadataBytes))
	}
}

func (c *checker) futureTime(field string, t time.Time, now time.Time) {
	if !t.After(now) {
		c.add(field, "must be in the future")
	}
}
