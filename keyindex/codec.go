package keyindex

import (
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// The binary record encoding carries a Record, token hashes included, in
// snapshots (where encoding/json's reflection made restoring a million keys
// take tens of seconds), in commands and in the FSM's state digest. It is
// deterministic: a record always gives the same bytes (metadata keys are
// sorted), so equal records hash equally on every node.
//
// Layout, in Record's field order:
//
//	flags (1 byte: flag* bits)  form (1 byte: form* bits)
//	ID WorkspaceID OwnerID Name [Type] [Environment] KeyPrefix KeySuffix Preview  (strings)
//	Scopes AllowedOrigins AllowedResources  (lists)
//	RateLimitPerMin (varint)  Metadata
//	[ExpiresAt] CreatedAt [UpdatedAt] CreatedBy [RevokedAt] [LastUsedAt]
//	UsageCount (varint)  [Rotation.PreviousExpiresAt  Rotation.PreviousHash (32 bytes)]
//	Hash (32 bytes)
//
// A string is a uvarint length and the bytes. A list is a uvarint of its
// length plus one, 0 for nil, then its strings; Metadata likewise, then key
// and value of each entry in ascending key order. A time is its Unix
// seconds (varint), nanoseconds (uvarint) and zone offset in seconds
// (varint). Fields in brackets are present when their flag is set.
//
// The form byte makes the common values short (about 52 of an imported
// key's 151 bytes): the type and environment as two bits each instead of
// strings, an UpdatedAt equal to CreatedAt left out, and an ID or a
// CreatedBy that is a key id ("key_" and a ULID, as NewID writes it) as the
// ULID's 16 bytes instead of 31. The index keeps millions of records in
// memory, and these bytes were a fifth of them.
//
// Records of commands and snapshots of version 3 have the ID written out
// as a string even when it is a key id (formIDULID came with version 4).
// DecodeRecord accepts that, and it is the one compact input that does not
// encode back to the same bytes: AppendRecord writes the ULID.
//
// flagCompact marks this layout. Without it a record is in the layout of
// snapshots version 2 and earlier commands: no form byte, every field
// written out. DecodeRecord reads both; AppendRecord writes only the
// compact one, and the index stores only compact records.
const (
	flagActive     = 1 << 0
	flagImported   = 1 << 1
	flagExpiresAt  = 1 << 2
	flagRevokedAt  = 1 << 3
	flagLastUsedAt = 1 << 4
	flagRotation   = 1 << 5
	flagCompact    = 1 << 7
	flagsKnown     = 1<<6 - 1 | flagCompact
)

// The form byte: two bits for the type and two for the environment (0: the
// value follows as a string, otherwise an index into compactTypes or
// compactEnvs), then single bits.
const (
	formTypeMask    = 3
	formEnvShift    = 2
	formEnvMask     = 3 << formEnvShift
	formSameUpdated = 1 << 4 // UpdatedAt is CreatedAt (same instant and offset): not written
	formCreatedByID = 1 << 5 // CreatedBy is "key_" + the ULID of the next 16 bytes
	formIDULID      = 1 << 6 // ID likewise
	formKnown       = 1<<7 - 1
)

var (
	compactTypes = [...]KeyType{1: TypeSecret, 2: TypePublishable, 3: TypeAdmin}
	compactEnvs  = [...]Environment{1: EnvLive, 2: EnvTest}
)

// compactCode is v's index in table, or 0 for a value written out.
func compactCode[T ~string](table []T, v T) byte {
	for i := 1; i < len(table); i++ {
		if table[i] == v {
			return byte(i)
		}
	}
	return 0
}

// keyIDPrefix starts every key id (NewID).
const keyIDPrefix = "key_"

// keyIDULID returns the ULID of a key id in its canonical form, the only
// form NewID writes and the only one written as bytes (so that the bytes
// decode to the same string).
func keyIDULID(id string) (ulid.ULID, bool) {
	if len(id) != len(keyIDPrefix)+ulid.EncodedSize || id[:len(keyIDPrefix)] != keyIDPrefix {
		return ulid.ULID{}, false
	}
	u, err := ulid.ParseStrict(id[len(keyIDPrefix):])
	if err != nil {
		return ulid.ULID{}, false
	}
	var canonical [ulid.EncodedSize]byte
	if u.MarshalTextTo(canonical[:]) != nil || string(canonical[:]) != id[len(keyIDPrefix):] {
		return ulid.ULID{}, false
	}
	return u, true
}

// sameTime reports whether two times encode to the same bytes.
func sameTime(a, b time.Time) bool {
	_, ao := a.Zone()
	_, bo := b.Zone()
	return a.Unix() == b.Unix() && a.Nanosecond() == b.Nanosecond() && ao == bo
}

// AppendRecord appends the binary encoding of r to dst.
func AppendRecord(dst []byte, r *Record) []byte {
	typ, env := compactCode(compactTypes[:], r.Type), compactCode(compactEnvs[:], r.Environment)
	form := typ | env<<formEnvShift
	sameUpdated := sameTime(r.UpdatedAt, r.CreatedAt)
	if sameUpdated {
		form |= formSameUpdated
	}
	createdBy, createdByID := keyIDULID(r.CreatedBy)
	if createdByID {
		form |= formCreatedByID
	}
	id, idULID := keyIDULID(r.ID)
	if idULID {
		form |= formIDULID
	}
	b := append(dst, recordFlags(r)|flagCompact, form)
	if idULID {
		b = append(b, id[:]...)
	} else {
		b = appendString(b, r.ID)
	}
	b = appendString(b, r.WorkspaceID)
	b = appendString(b, r.OwnerID)
	b = appendString(b, r.Name)
	if typ == 0 {
		b = appendString(b, string(r.Type))
	}
	if env == 0 {
		b = appendString(b, string(r.Environment))
	}
	b = appendString(b, r.KeyPrefix)
	b = appendString(b, r.KeySuffix)
	b = appendString(b, r.Preview)
	b = appendPolicy(b, r)
	b = appendTime(b, r.CreatedAt)
	if !sameUpdated {
		b = appendTime(b, r.UpdatedAt)
	}
	if createdByID {
		b = append(b, createdBy[:]...)
	} else {
		b = appendString(b, r.CreatedBy)
	}
	return appendState(b, r)
}

// appendPolicy writes the fields from the scopes to expires_at, which both
// layouts write alike.
func appendPolicy(b []byte, r *Record) []byte {
	b = appendList(b, r.Scopes)
	b = appendList(b, r.AllowedOrigins)
	b = appendList(b, r.AllowedResources)
	b = binary.AppendVarint(b, int64(r.RateLimitPerMin))
	b = appendMetadata(b, r.Metadata)
	return appendOptTime(b, r.ExpiresAt)
}

// appendState writes the fields from revoked_at to the end, which both
// layouts write alike.
func appendState(b []byte, r *Record) []byte {
	b = appendOptTime(b, r.RevokedAt)
	b = appendOptTime(b, r.LastUsedAt)
	b = binary.AppendVarint(b, r.UsageCount)
	if r.Rotation != nil {
		b = appendTime(b, r.Rotation.PreviousExpiresAt)
		b = append(b, r.Rotation.PreviousHash[:]...)
	}
	return append(b, r.Hash[:]...)
}

func recordFlags(r *Record) byte {
	var f byte
	set := func(bit byte, on bool) {
		if on {
			f |= bit
		}
	}
	set(flagActive, r.Active)
	set(flagImported, r.Imported)
	set(flagExpiresAt, r.ExpiresAt != nil)
	set(flagRevokedAt, r.RevokedAt != nil)
	set(flagLastUsedAt, r.LastUsedAt != nil)
	set(flagRotation, r.Rotation != nil)
	return f
}

// DecodeRecord decodes what AppendRecord writes, and nothing else: every
// accepted compact input encodes again to the same bytes (an input in the
// older layout, to its compact form; a version-3 one with its key id written
// out, to the ULID form). Its times must be ones a record's
// JSON form can carry (as every time in the state, which came in as JSON).
// Hostile input is refused without panicking, and allocates at most a
// small multiple of len(b).
func DecodeRecord(b []byte) (*Record, error) {
	r := new(Record)
	if err := decodeRecord(r, b, false); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeRecord decodes b into r. With alias, r's strings point into b
// rather than being copied: r is then only valid while b is.
func decodeRecord(r *Record, b []byte, alias bool) error {
	rd := recordReader{b: b, alias: alias}
	// The fields are read in order: Go evaluates the calls in a composite
	// literal, and on the right of an assignment, left to right.
	flags := rd.byte()
	if flags&^flagsKnown != 0 {
		return fmt.Errorf("record: unknown flags %#x", flags)
	}
	compact := flags&flagCompact != 0
	form := byte(0)
	if compact {
		if form = rd.byte(); form&^formKnown != 0 || form&formEnvMask == 3<<formEnvShift {
			return fmt.Errorf("record: unknown form %#x", form)
		}
	}
	*r = Record{
		ID: rd.keyID(form&formIDULID != 0), WorkspaceID: rd.str(), OwnerID: rd.str(), Name: rd.str(),
		Active: flags&flagActive != 0, Imported: flags&flagImported != 0,
	}
	r.Type = readCompact(&rd, compactTypes[:], form&formTypeMask, compact)
	r.Environment = readCompact(&rd, compactEnvs[:], form&formEnvMask>>formEnvShift, compact)
	r.KeyPrefix, r.KeySuffix, r.Preview = rd.str(), rd.str(), rd.str()
	r.Scopes, r.AllowedOrigins, r.AllowedResources = rd.list(), rd.list(), rd.list()
	r.RateLimitPerMin, r.Metadata = rd.int(), rd.metadata()
	r.ExpiresAt = rd.optTime(flags&flagExpiresAt != 0)
	r.CreatedAt = rd.time()
	if form&formSameUpdated != 0 {
		r.UpdatedAt = r.CreatedAt
	} else if r.UpdatedAt = rd.time(); compact && rd.err == nil && sameTime(r.UpdatedAt, r.CreatedAt) {
		rd.fail("updated_at written out though equal to created_at")
	}
	if form&formCreatedByID != 0 {
		r.CreatedBy = rd.keyID(true)
	} else if r.CreatedBy = rd.str(); compact {
		if _, ok := keyIDULID(r.CreatedBy); ok {
			rd.fail("created_by written out though a key id")
		}
	}
	r.RevokedAt = rd.optTime(flags&flagRevokedAt != 0)
	r.LastUsedAt = rd.optTime(flags&flagLastUsedAt != 0)
	r.UsageCount = rd.varint()
	if flags&flagRotation != 0 {
		r.Rotation = &Rotation{PreviousExpiresAt: rd.time(), PreviousHash: rd.hash()}
	}
	r.Hash = rd.hash()
	if rd.err == nil && len(rd.b) > 0 {
		rd.fail("%d bytes after the record", len(rd.b))
	}
	if rd.err != nil {
		return fmt.Errorf("record: %w", rd.err)
	}
	return nil
}

// readCompact reads a type or environment: from its table when code is
// not 0, otherwise as a string, which in the compact layout must not be
// one the table holds (it would not encode back to the same bytes).
func readCompact[T ~string](rd *recordReader, table []T, code byte, compact bool) T {
	if code != 0 {
		return table[code]
	}
	v := T(rd.str())
	if compact && rd.err == nil && compactCode(table, v) != 0 {
		rd.fail("%q written out though it has a code", v)
	}
	return v
}

// The append functions write the parts of the encoding. (They return the
// slice rather than being methods of a writer: that way dst can stay on
// the caller's stack, as it does when the digest hashes a record.)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendCount writes the length of a list or map, keeping nil apart from
// empty: the API answers null for one and [] or {} for the other.
func appendCount(b []byte, n int, isNil bool) []byte {
	if isNil {
		return binary.AppendUvarint(b, 0)
	}
	return binary.AppendUvarint(b, uint64(n)+1)
}

func appendList(b []byte, list []string) []byte {
	b = appendCount(b, len(list), list == nil)
	for _, s := range list {
		b = appendString(b, s)
	}
	return b
}

func appendMetadata(b []byte, m map[string]string) []byte {
	b = appendCount(b, len(m), m == nil)
	var kb [8]string
	for _, k := range sortedKeys(kb[:0], m) {
		b = appendString(b, k)
		b = appendString(b, m[k])
	}
	return b
}

// appendTime keeps the instant and the zone offset, which is what a time's
// JSON (RFC 3339) form carries; the zone's name and location are not kept.
func appendTime(b []byte, t time.Time) []byte {
	_, offset := t.Zone()
	b = binary.AppendVarint(b, t.Unix())
	b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	return binary.AppendVarint(b, int64(offset))
}

func appendOptTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return b
	}
	return appendTime(b, *t)
}

// recordReader reads the encoding from the front of b. Its error is
// sticky: after the first failure b is emptied, every read returns a zero
// value, and the caller checks err once at the end.
type recordReader struct {
	b     []byte
	err   error
	alias bool // strings point into b instead of being copies
}

func (r *recordReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
	r.b = nil
}

func (r *recordReader) byte() byte {
	if len(r.b) == 0 {
		r.fail("record ends early")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if !r.skipVarint(n) {
		return 0
	}
	return v
}

func (r *recordReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if !r.skipVarint(n) {
		return 0
	}
	return v
}

// skipVarint consumes a varint of n bytes (as binary.Uvarint reports it).
// A longer than necessary varint (a zero last byte) is refused: it would
// not encode again to the same bytes.
func (r *recordReader) skipVarint(n int) bool {
	if n <= 0 || (n > 1 && r.b[n-1] == 0) {
		r.fail("malformed varint")
		return false
	}
	r.b = r.b[n:]
	return true
}

// int reads an int, which is narrower than the varint on 32-bit platforms.
func (r *recordReader) int() int {
	v := r.varint()
	if int64(int(v)) != v {
		r.fail("integer %d out of range", v)
		return 0
	}
	return int(v)
}

func (r *recordReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("string of %d bytes past the end", n)
		return ""
	}
	s := r.b[:n]
	r.b = r.b[n:]
	if r.alias {
		return unsafe.String(unsafe.SliceData(s), len(s))
	}
	return string(s)
}

// count reads what appendCount wrote. Every element takes at least
// minBytes more, so a count the remaining bytes cannot hold is refused
// before anything is allocated for it.
func (r *recordReader) count(minBytes int) (n int, isNil bool) {
	c := r.uvarint()
	if c == 0 {
		return 0, true
	}
	if c-1 > uint64(len(r.b)/minBytes) {
		r.fail("%d elements past the end", c-1)
		return 0, true
	}
	return int(c - 1), false
}

func (r *recordReader) list() []string {
	n, isNil := r.count(1)
	if isNil {
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = r.str()
	}
	return s
}

func (r *recordReader) metadata() map[string]string {
	n, isNil := r.count(2)
	if isNil {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := range n {
		k, v := r.str(), r.str()
		if i > 0 && k <= prev {
			r.fail("metadata keys not in ascending order")
			return nil
		}
		m[k], prev = v, k
	}
	return m
}

// Bounds of a time: the ones a record's JSON form (RFC 3339) can carry,
// years 0000 to 9999 in the time's own zone, whose offset is under a day.
// The seconds are first checked coarsely (a day's margin either side) so
// that no arithmetic on them overflows.
const maxOffset = 24*60*60 - 1

var (
	minUnix = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix() - maxOffset
	maxUnix = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).Unix() + maxOffset
)

// time reads what appendTime wrote. A zero offset decodes as UTC, as
// the time's JSON form ("Z") does; any other as an unnamed fixed zone, as
// encoding/json decodes "+01:00".
func (r *recordReader) time() time.Time {
	sec, nsec, offset := r.varint(), r.uvarint(), r.varint()
	if r.err != nil {
		return time.Time{}
	}
	if sec < minUnix || sec > maxUnix || nsec >= 1e9 || offset < -maxOffset || offset > maxOffset {
		r.fail("time out of range")
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec)).UTC()
	if offset != 0 {
		t = t.In(time.FixedZone("", int(offset)))
	}
	if y := t.Year(); y < 0 || y > 9999 {
		r.fail("time out of range")
		return time.Time{}
	}
	return t
}

func (r *recordReader) optTime(present bool) *time.Time {
	if !present {
		return nil
	}
	t := r.time()
	return &t
}

// keyID reads an id or created_by: with asULID, a key id as its ULID's 16
// bytes; otherwise a string.
func (r *recordReader) keyID(asULID bool) string {
	if asULID {
		return keyIDPrefix + ulid.ULID(r.bytes16()).String()
	}
	return r.str()
}

func (r *recordReader) bytes16() [16]byte {
	var u [16]byte
	if len(r.b) < len(u) {
		r.fail("record ends early")
		return u
	}
	r.b = r.b[copy(u[:], r.b):]
	return u
}

func (r *recordReader) hash() Hash {
	var h Hash
	if len(r.b) < len(h) {
		r.fail("record ends early")
		return h
	}
	r.b = r.b[copy(h[:], r.b):]
	return h
}
