package keyindex

import (
	"bytes"
	"encoding/binary"
	"iter"
	"math"
	"strings"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// view reads what verification needs of a stored record straight from its
// encoding (codec.go), without allocating: strings point into the arena,
// whose bytes never change. Stored bytes were written by AppendRecord in
// this process (the compact layout: the index stores no other), so the
// reader trusts them and does not check bounds beyond what the slice
// access does.
type view struct {
	flags, form                        byte
	id                                 storedID
	workspace, owner, typ, environment string
	listsAt                            int // offset of the scopes in the encoding
	keyLists
	metadata encodedList
	expires  encodedTime // if flags&flagExpiresAt
	tail     []byte      // the fields after expires_at
}

// keyLists are a record's scopes, origins and resources, and the bytes
// after them.
type keyLists struct {
	scopes, origins, resources encodedList
	rest                       []byte
}

func readLists(b []byte) keyLists {
	r := viewReader{b: b}
	l := keyLists{scopes: r.list(1), origins: r.list(1), resources: r.list(1)}
	l.rest = r.b
	return l
}

// encodedList is a list (or, for metadata, key-value pairs) as the codec
// writes it, after its count: n strings (2 per metadata entry); n < 0 for nil.
type encodedList struct {
	n int
	b []byte
}

// encodedTime is a time as the codec writes it.
type encodedTime struct{ sec, nsec, offset int64 }

// head is the strings at the front of the encoding, read for an answer's
// headers and for the listing order without walking the whole record.
type head struct {
	id                    storedID
	workspace, owner, typ string
	rest                  []byte // from the environment on
}

// headerLen is the flags and form bytes before the first string.
const headerLen = 2

func readHead(b []byte) head {
	r := viewReader{b: b[headerLen:]}
	h := head{id: r.id(b[1]), workspace: r.str(), owner: r.str()}
	r.str() // name
	if code := b[1] & formTypeMask; code != 0 {
		h.typ = string(compactTypes[code])
	} else {
		h.typ = r.str()
	}
	h.rest = r.b
	return h
}

// readOrderKey reads only what the listing order compares: the id and the
// workspace at the front. The order (orderSet) calls it ~20 times per
// insert.
func readOrderKey(b []byte) (workspace string, id storedID) {
	r := viewReader{b: b[headerLen:]}
	id = r.id(b[1])
	return r.str(), id
}

func readView(b []byte) view {
	h := readHead(b)
	v := view{flags: b[0], form: b[1], id: h.id, workspace: h.workspace, owner: h.owner, typ: h.typ}
	r := viewReader{b: h.rest}
	if code := v.form & formEnvMask >> formEnvShift; code != 0 {
		v.environment = string(compactEnvs[code])
	} else {
		v.environment = r.str()
	}
	r.str() // key_prefix
	r.str() // key_suffix
	r.str() // preview
	v.listsAt = len(b) - len(r.b)
	v.keyLists = readLists(r.b)
	r.b = v.rest
	r.varint() // rate_limit_per_min
	v.metadata = r.list(2)
	if v.flags&flagExpiresAt != 0 {
		v.expires = r.time()
	}
	v.tail = r.b
	return v
}

// readPrevExpires finds the rotation's previous_expires_at, which sits
// before the two hashes and follows fields of variable length: it is
// reached by reading the record from the start.
func readPrevExpires(b []byte) int64 {
	u := readUsage(b)
	r := viewReader{b: b[u.end:]}
	return r.time().unixNano()
}

// usageFields is where a record's [last_used_at] and usage_count are in
// its encoding: last_used_at (when flagged) from start, usage_count from
// countAt to end.
type usageFields struct {
	start, countAt, end int
	lastUsed            encodedTime
	count               int64
}

func readUsage(b []byte) usageFields {
	v := readView(b)
	r := viewReader{b: v.tail}
	r.time() // created_at
	if v.form&formSameUpdated == 0 {
		r.time() // updated_at
	}
	if v.form&formCreatedByID != 0 {
		r.b = r.b[16:] // created_by, a key id's ULID
	} else {
		r.str() // created_by
	}
	if v.flags&flagRevokedAt != 0 {
		r.time()
	}
	var u usageFields
	u.start = len(b) - len(r.b)
	if v.flags&flagLastUsedAt != 0 {
		u.lastUsed = r.time()
	}
	u.countAt = len(b) - len(r.b)
	u.count = r.varint()
	u.end = len(b) - len(r.b)
	return u
}

// time is the instant (in UTC: only comparisons use it).
func (t encodedTime) time() time.Time { return time.Unix(t.sec, t.nsec) }

// unixNano is the time in Unix nanoseconds. Times int64 nanoseconds cannot
// hold (after 2262, before 1678) are clamped, not wrapped: UnixNano of
// 2300-01-01 is negative, which would make a key expire at once. The one
// real time that is 0 ns, the Unix epoch, becomes 1, as 0 means "no time".
func (t encodedTime) unixNano() int64 {
	const maxSec = math.MaxInt64/int64(1e9) - 1
	switch {
	case t.sec > maxSec:
		return math.MaxInt64
	case t.sec < -maxSec:
		return math.MinInt64
	}
	if ns := t.sec*1e9 + t.nsec; ns != 0 {
		return ns
	}
	return 1
}

// appendJSON writes the time as encoding/json does (RFC 3339 with
// nanoseconds, in its own zone) without building a time.Location.
func (t encodedTime) appendJSON(b []byte) []byte {
	b = append(b, '"')
	b = time.Unix(t.sec+t.offset, t.nsec).UTC().AppendFormat(b, "2006-01-02T15:04:05.999999999")
	if t.offset == 0 {
		return append(b, 'Z', '"')
	}
	zone, sign := t.offset/60, byte('+')
	if zone < 0 {
		zone, sign = -zone, '-'
	}
	return append(b, sign, byte('0'+zone/600), byte('0'+zone/60%10), ':', byte('0'+zone%60/10), byte('0'+zone%10), '"')
}

// All yields the strings of a list (for metadata: key, value, key, …).
func (l encodedList) All() iter.Seq[string] {
	return func(yield func(string) bool) {
		r := viewReader{b: l.b}
		for range l.n {
			if !yield(r.str()) {
				return
			}
		}
	}
}

// Empty reports whether the list is nil or has no element.
func (l encodedList) Empty() bool { return l.n <= 0 }

type viewReader struct{ b []byte }

func (r *viewReader) byte() byte {
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *viewReader) uvarint() uint64 {
	// Nearly every length and count in a record fits one byte: this path
	// inlines, binary.Uvarint does not.
	if len(r.b) > 0 && r.b[0] < 0x80 {
		v := uint64(r.b[0])
		r.b = r.b[1:]
		return v
	}
	v, n := binary.Uvarint(r.b)
	r.b = r.b[n:]
	return v
}

func (r *viewReader) varint() int64 {
	v, n := binary.Varint(r.b)
	r.b = r.b[n:]
	return v
}

// id reads the id of a record whose form byte is form.
func (r *viewReader) id(form byte) storedID {
	if form&formIDULID != 0 {
		u := r.b[:len(ulid.ULID{})]
		r.b = r.b[len(u):]
		return storedID{raw: unsafe.String(&u[0], len(u)), ulid: true}
	}
	return storedID{raw: r.str()}
}

func (r *viewReader) str() string {
	n := r.uvarint()
	s := r.b[:n]
	r.b = r.b[n:]
	if n == 0 {
		return ""
	}
	return unsafe.String(&s[0], len(s))
}

// list skips a list of n items of per strings each and returns it.
func (r *viewReader) list(per int) encodedList {
	c := int(r.uvarint())
	if c == 0 {
		return encodedList{n: -1}
	}
	start := r.b
	for range (c - 1) * per {
		r.b = r.b[r.uvarint():]
	}
	return encodedList{n: (c - 1) * per, b: start[:len(start)-len(r.b)]}
}

func (r *viewReader) time() encodedTime {
	return encodedTime{sec: r.varint(), nsec: int64(r.uvarint()), offset: r.varint()}
}

// storedID is a record's id as its encoding holds it: the string, or for a
// key id ("key_" and a ULID; formIDULID) the ULID's 16 bytes. Like the
// view's strings, raw points into the arena.
type storedID struct {
	raw  string
	ulid bool
}

// keyIDLen is the length of a key id NewID writes.
const keyIDLen = len(keyIDPrefix) + ulid.EncodedSize

// text is the id as the API shows it: in buf for a ULID, otherwise the
// stored bytes themselves, which must not be written to.
func (id storedID) text(buf *[keyIDLen]byte) []byte {
	if !id.ulid {
		return unsafe.Slice(unsafe.StringData(id.raw), len(id.raw))
	}
	var u ulid.ULID
	copy(u[:], id.raw)
	copy(buf[:], keyIDPrefix)
	_ = u.MarshalTextTo(buf[len(keyIDPrefix):]) // cannot fail: the room is the encoded size
	return buf[:]
}

// String returns the id as a string of its own (it allocates).
func (id storedID) String() string {
	var buf [keyIDLen]byte
	return string(id.text(&buf))
}

// appendJSON appends the id as a JSON string.
func (id storedID) appendJSON(b []byte) []byte {
	if !id.ulid {
		return appendJSONString(b, id.raw)
	}
	var buf [keyIDLen]byte
	return append(append(append(b, '"'), id.text(&buf)...), '"') // nothing to escape
}

// is reports whether the id is s.
func (id storedID) is(s string) bool {
	if !id.ulid {
		return id.raw == s
	}
	var buf [keyIDLen]byte
	return string(id.text(&buf)) == s
}

// compareIDs orders ids as their strings. Two ULIDs compare as their
// bytes: the text of a ULID (Crockford's base32, most significant bits
// first, digits in ASCII order) sorts as its bytes do.
func compareIDs(a, b storedID) int {
	if a.ulid && b.ulid {
		return strings.Compare(a.raw, b.raw)
	}
	var ba, bb [keyIDLen]byte
	return bytes.Compare(a.text(&ba), b.text(&bb))
}
