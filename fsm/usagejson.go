package fsm

import (
	"bytes"
	"slices"
	"strconv"
	"time"
)

// Usage commands are most of a busy cluster's Raft log: every node flushes
// the keys it verified every --usage-flush-interval, up to a thousand per
// command, so a node verifying 100,000 keys applies a hundred of them every
// five seconds. encoding/json's reflection was a third of that work on a
// node under load (bench/README.md, session 14), so a usage command is
// written and read by hand here, in exactly the bytes encoding/json writes:
// the log's format does not change, and anything else (another shape,
// escapes, spaces, other fields) goes to encoding/json.

const (
	usageHead     = `{"op":"usage","usage":[`
	usageTail     = `]}`
	usageIDField  = `{"id":"`
	usageCount    = `","count":`
	usageLastUsed = `,"last_used_at":`
	// maxUsageEntryLen bounds an entry's length but for its id: the fields'
	// names, a comma, an int64 and a quoted RFC 3339 time with nanoseconds
	// and a zone offset.
	maxUsageEntryLen = len(usageIDField+usageCount+usageLastUsed) + 1 + 20 + len(`"2006-01-02T15:04:05.999999999-07:00"}`)
)

// appendUsageJSON appends json.Marshal(c) if c is a usage command the fast
// form writes exactly as encoding/json does, and reports whether it did.
func appendUsageJSON(dst []byte, c *Command) ([]byte, bool) {
	if c.Op != OpUsage || len(c.Usage) == 0 || !c.onlyUsage() {
		return dst, false
	}
	size := len(usageHead) + len(usageTail)
	for i := range c.Usage {
		if !plainJSONString(c.Usage[i].ID) || !strictRFC3339(c.Usage[i].LastUsedAt) {
			return dst, false
		}
		size += len(c.Usage[i].ID) + maxUsageEntryLen
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, usageHead...)
	for i, u := range c.Usage {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, usageIDField...)
		dst = append(dst, u.ID...)
		dst = append(dst, usageCount...)
		dst = strconv.AppendInt(dst, u.Count, 10)
		dst = append(dst, usageLastUsed...)
		dst = append(dst, '"')
		dst = u.LastUsedAt.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"', '}')
	}
	return append(dst, usageTail...), true
}

// onlyUsage reports whether every field but Op and Usage is zero, so that
// encoding/json writes none of them.
func (c *Command) onlyUsage() bool {
	return c.Audit == nil && c.Record == nil && c.Records == nil && !c.Bootstrap && c.ID == "" &&
		c.Time.IsZero() && c.Update == nil && c.Rotate == nil && c.IDs == nil && !c.KeepRoot
}

// plainJSONString: s is written by encoding/json as itself between quotes
// (printable ASCII other than the quote, the backslash and the characters
// it escapes for HTML).
func plainJSONString[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&' {
			return false
		}
	}
	return true
}

// strictRFC3339: t.MarshalJSON succeeds, writing t.AppendFormat(RFC3339Nano)
// quoted (its year within [0, 9999], its zone offset whole minutes under a
// day).
func strictRFC3339(t time.Time) bool {
	_, off := t.Zone()
	return t.Year() >= 0 && t.Year() <= 9999 && off%60 == 0 && off > -24*3600 && off < 24*3600
}

// decodeUsageJSON reads a usage command in the form appendUsageJSON writes.
// ok is false for any other bytes, which the caller hands to encoding/json.
func decodeUsageJSON(b []byte) (c *Command, ok bool) {
	if !bytes.HasPrefix(b, []byte(usageHead)) || !bytes.HasSuffix(b, []byte(usageTail)) {
		return nil, false
	}
	body := b[len(usageHead) : len(b)-len(usageTail)]
	usage := make([]Usage, 0, bytes.Count(body, []byte(usageIDField)))
	for len(body) > 0 {
		if len(usage) > 0 {
			if body[0] != ',' {
				return nil, false
			}
			body = body[1:]
		}
		var u Usage
		if body, ok = usageEntry(body, &u); !ok {
			return nil, false
		}
		usage = append(usage, u)
	}
	if len(usage) == 0 {
		return nil, false // "usage":[] decodes to an empty, non-nil slice: encoding/json's case
	}
	return &Command{Op: OpUsage, Usage: usage}, true
}

// usageEntry reads one {"id":…,"count":…,"last_used_at":…} from the start
// of b into u and returns the rest.
func usageEntry(b []byte, u *Usage) ([]byte, bool) {
	var ok bool
	if b, ok = bytes.CutPrefix(b, []byte(usageIDField)); !ok {
		return nil, false
	}
	end := bytes.IndexByte(b, '"')
	if end < 0 || !plainJSONString(b[:end]) {
		return nil, false
	}
	u.ID = string(b[:end])
	if b, ok = bytes.CutPrefix(b[end:], []byte(usageCount)); !ok {
		return nil, false
	}
	end = bytes.IndexByte(b, ',')
	if end < 0 || !jsonInteger(b[:end]) {
		return nil, false
	}
	n, err := strconv.ParseInt(string(b[:end]), 10, 64)
	if err != nil {
		return nil, false
	}
	u.Count = n
	if b, ok = bytes.CutPrefix(b[end:], []byte(usageLastUsed)); !ok || len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	end = bytes.IndexByte(b[1:], '"') + 1 // the closing quote
	if end == 0 {
		return nil, false
	}
	// The quoted string, as encoding/json hands it to Time.UnmarshalJSON.
	if err := u.LastUsedAt.UnmarshalJSON(b[:end+1]); err != nil {
		return nil, false
	}
	if b, ok = bytes.CutPrefix(b[end+1:], []byte("}")); !ok {
		return nil, false
	}
	return b, true
}

// jsonInteger: b is an integer in JSON's grammar (no leading zeros, no plus
// sign, no fraction or exponent).
func jsonInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
