package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/internal/fuzzseed"
	"github.com/keyraft/keyraft/keyindex"
)

// FuzzDecodeCommand: Decode never panics on any bytes; a command it accepts
// encodes again, and decoding that gives an equal command whose encoding is
// the same bytes (decode→encode is stable). Applying it to a state never
// panics, is deterministic (two equal states stay equal), and a command
// that fails leaves the state as it was.
func FuzzDecodeCommand(f *testing.F) {
	base := fuzzBase(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if c != nil {
				t.Fatalf("Decode returned a command and an error: %v", err)
			}
			return
		}
		b1, err := Encode(c)
		if err != nil {
			// Apply hashes what it stores by its encoding: a decodable
			// command that cannot be encoded would crash every node.
			t.Fatalf("decoded command does not encode: %v\n%q", err, data)
		}
		c2, err := Decode(b1)
		if err != nil {
			t.Fatalf("encoded command does not decode: %v\n%s", err, b1)
		}
		if !equalValues(reflect.ValueOf(c), reflect.ValueOf(c2)) {
			t.Fatalf("decode→encode→decode changed the command:\n%s\n%+v\n%+v", b1, c, c2)
		}
		if b2, err := Encode(c2); err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", b1, b2, err)
		}

		// Apply the original bytes to two copies of a small state.
		x, y := base(t), base(t)
		_, before := x.Digest()
		rx := x.Apply(&raft.Log{Index: 100, Term: 2, Type: raft.LogCommand, Data: data}).(*Result)
		ry := y.Apply(&raft.Log{Index: 100, Term: 2, Type: raft.LogCommand, Data: data}).(*Result)
		_, dx := x.Digest()
		_, dy := y.Digest()
		if dx != dy || (rx.Err == nil) != (ry.Err == nil) {
			t.Fatalf("Apply is not deterministic on %q", data)
		}
		if rx.Err != nil && dx != before {
			t.Fatalf("a failed %s command (%v) changed the state", c.Op, rx.Err)
		}
		if x.AppliedIndex() != 100 {
			t.Fatalf("applied index %d after Apply", x.AppliedIndex())
		}
		checkIndexConsistent(t, x)
	})
}

// FuzzRestore: Restore of arbitrary bytes never panics and never allocates
// in proportion to what the stream claims; a refused restore leaves the
// state unchanged; an accepted one yields a state whose own snapshot
// restores to an equal state. And for states built by a fuzzed sequence of
// commands (ops), Restore(Snapshot(S)) = S, byte for byte.
//
// With fixSum, the last 4 bytes of data are first replaced by the right
// CRC-32C, so that the fuzzer reaches what lies behind the checksum.
func FuzzRestore(f *testing.F) {
	base := fuzzBase(f)
	f.Fuzz(func(t *testing.T, data []byte, fixSum bool, ops []byte) {
		if fixSum && len(data) >= 4 {
			data = append([]byte(nil), data...)
			binary.BigEndian.PutUint32(data[len(data)-4:], crc32.Checksum(data[:len(data)-4], castagnoli))
		}
		x := base(t)
		before := state(t, x)
		_, digest := x.Digest()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		err := x.Restore(io.NopCloser(bytes.NewReader(data)))
		runtime.ReadMemStats(&m1)
		// Whatever a stream claims, Restore allocates in proportion to the
		// bytes it is given: buffers of at most a frame (1 MiB) and small
		// first guesses of the counts.
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 4<<20+64*uint64(len(data)) {
			t.Fatalf("Restore of %d bytes allocated %d KiB", len(data), alloc>>10)
		}
		if err != nil {
			if _, d := x.Digest(); state(t, x) != before || d != digest {
				t.Fatalf("a refused restore (%v) changed the state", err)
			}
		} else {
			checkIndexConsistent(t, x)
			roundTrip(t, x)
		}

		if len(ops) > 0 {
			s := buildState(t, ops)
			checkIndexConsistent(t, s)
			roundTrip(t, s)
		}
	})
}

// roundTrip checks Restore(Snapshot(f)) = f: the same state, digest and
// snapshot bytes.
func roundTrip(t *testing.T, f *FSM) {
	t.Helper()
	snap := snapshotBytes(t, f)
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatalf("restoring a snapshot of the state: %v", err)
	}
	if a, b := state(t, f), state(t, g); a != b {
		t.Fatalf("Restore(Snapshot(S)) != S:\n%s\n%s", a, b)
	}
	ai, ad := f.Digest()
	bi, bd := g.Digest()
	if ai != bi || ad != bd {
		t.Fatalf("digests differ after a round trip: %d %s / %d %s", ai, ad, bi, bd)
	}
	if again := snapshotBytes(t, g); !bytes.Equal(snap, again) {
		t.Fatalf("snapshot of the restored state differs")
	}
}

// checkIndexConsistent: every record is found by id and by its hashes.
func checkIndexConsistent(t *testing.T, f *FSM) {
	t.Helper()
	ix := f.Index()
	n := 0
	ix.Snapshot().Each(func(r *keyindex.Record) bool {
		n++
		if !reflect.DeepEqual(ix.Get(r.ID), r) || !reflect.DeepEqual(ix.GetByHash(r.Hash), r) || !ix.HashInUse(r.Hash) {
			t.Fatalf("record %s is not indexed by id and hash", r.ID)
		}
		if r.Rotation != nil && !ix.HashInUse(r.Rotation.PreviousHash) {
			t.Fatalf("record %s: previous hash not indexed", r.ID)
		}
		return true
	})
	if n != ix.Len() {
		t.Fatalf("ordered view has %d records, index %d", n, ix.Len())
	}
}

// fuzzBase returns a constructor of one fixed small state (a root key,
// keys in two workspaces, a rotation, an import, usage and audit entries),
// built once from commands and then restored from its snapshot.
func fuzzBase(f *testing.F) func(t *testing.T) *FSM {
	var snap []byte
	{
		s := buildState(f, []byte("\x08\x00\x01\x02\x10\x11\x05\x03\x21\x06\x02\x12\x02\x07\x01"))
		var buf bytes.Buffer
		if err := s.Backup().Write(&buf); err != nil {
			f.Fatal(err)
		}
		snap = buf.Bytes()
	}
	return func(t *testing.T) *FSM {
		x := New()
		if err := x.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatal(err)
		}
		return x
	}
}

// fuzzTime is the fixed clock of fuzzed states.
var fuzzTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// buildState applies up to 64 commands chosen by ops to a new FSM. Every
// command is built deterministically from the bytes (ids, hashes, times);
// commands that fail (conflicts, missing keys) are part of the sequence.
func buildState(t testing.TB, ops []byte) *FSM {
	f := New()
	var index uint64
	next := func() byte {
		if len(ops) == 0 {
			return 0
		}
		b := ops[0]
		ops = ops[1:]
		return b
	}
	var ids []string
	pick := func() string {
		b := next()
		if len(ids) == 0 || int(b) >= 4*len(ids) {
			return fmt.Sprintf("key_%026d", b) // unknown
		}
		return ids[int(b)%len(ids)]
	}
	hash := func(seed ...byte) keyindex.Hash { return sha256.Sum256(append([]byte("fuzz"), seed...)) }
	at := func(b byte) time.Time { return fuzzTime.Add(time.Duration(b) * time.Minute) }
	record := func(n int) *keyindex.Record {
		b := next()
		id, err := keyindex.NewID(at(byte(n)), bytes.NewReader(bytes.Repeat([]byte{byte(n), b}, 8)))
		if err != nil {
			panic(err)
		}
		types := []keyindex.KeyType{keyindex.TypeSecret, keyindex.TypePublishable, keyindex.TypeAdmin}
		r := &keyindex.Record{
			ID: id, WorkspaceID: []string{"ws_a", "ws_b", keyindex.RootWorkspace}[int(b)%3], OwnerID: fmt.Sprint("o", b%4),
			Name: fmt.Sprintf("key %d", n), Type: types[int(b/3)%3], Environment: keyindex.EnvLive,
			KeyPrefix: "sk_live_", KeySuffix: "abcd", Preview: "wxyz…abcd",
			Scopes: []string{"calls:*"}, AllowedOrigins: []string{}, AllowedResources: []string{},
			RateLimitPerMin: int(b % 5), Metadata: map[string]string{"n": fmt.Sprint(n)},
			Active: b%7 != 0, CreatedAt: at(byte(n)), UpdatedAt: at(byte(n)), CreatedBy: "key_root",
			Hash: hash(byte(n), b, byte(len(ops))), Imported: b%11 == 0,
		}
		if b%5 == 1 {
			e := at(b)
			r.ExpiresAt = &e
		}
		if b%13 == 2 { // a far expiry, past int64 nanoseconds
			e := time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)
			r.ExpiresAt = &e
		}
		return r
	}
	for n := 0; len(ops) > 0 && n < 64; n++ {
		op := next()
		c := &Command{Time: at(byte(n))}
		if op&0x80 != 0 {
			c.Audit = &AuditEntry{Time: at(byte(n)), ActorKeyID: "key_root", WorkspaceID: "ws_a", Action: "fuzz", Target: fmt.Sprint(n), RequestID: "r"}
		}
		switch op & 0x0f % 9 {
		case 0:
			r := record(n)
			c.Op, c.Record = OpCreate, Store(r)
			ids = append(ids, r.ID)
		case 1:
			name, active, rl := fmt.Sprint("renamed ", n), op&0x10 == 0, int(next())
			scopes, meta := []string{"a:b", "c:*"}, map[string]string{"m": fmt.Sprint(n)}
			u := &Update{Name: &name, Active: &active}
			if op&0x20 != 0 {
				u.Scopes, u.Metadata, u.RateLimitPerMin = &scopes, &meta, &rl
			}
			if op&0x40 != 0 {
				u.ClearExpiry = true
			} else if e := at(next()); op&0x10 != 0 {
				u.ExpiresAt = &e
			}
			c.Op, c.ID, c.Update = OpUpdate, pick(), u
		case 2:
			rot := &Rotate{SHA256: hash(0xff, byte(n), next()), KeyPrefix: "sk_live_", KeySuffix: "efgh", Preview: "ijkl…efgh"}
			if op&0x10 != 0 {
				e := at(byte(n) + 30)
				rot.PreviousExpiresAt = &e
			}
			c.Op, c.ID, c.Rotate = OpRotate, pick(), rot
		case 3:
			c.Op, c.ID = OpRevoke, pick()
		case 4:
			c.Op, c.ID = OpDelete, pick()
		case 5:
			c.Op = OpImport
			for i := range int(next()%3) + 1 {
				r := record(n*4 + i)
				r.Imported = true
				c.Records = append(c.Records, Store(r))
				ids = append(ids, r.ID)
			}
		case 6:
			c.Op = OpUsage
			for range int(next()%3) + 1 {
				c.Usage = append(c.Usage, Usage{ID: pick(), Count: int64(next()), LastUsedAt: at(next())})
			}
		case 7:
			c.Op, c.IDs = OpPurgeRotations, []string{pick(), pick()}
		case 8:
			r := record(n)
			r.Type, r.WorkspaceID, r.Scopes = keyindex.TypeAdmin, keyindex.RootWorkspace, keyindex.AdminScopes
			c.Op, c.Record, c.Bootstrap = OpCreate, Store(r), true
			ids = append(ids, r.ID)
		}
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("encoding %s: %v", c.Op, err)
		}
		index++
		f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b})
	}
	return f
}

// equalValues is reflect.DeepEqual, except that times are equal when they
// are the same instant with the same offset (decoding makes a new *Location
// for every offset), and nil and empty slices and maps are equal (omitempty
// drops both). The zero instant is equal in any offset: Command.Time
// is omitted when zero (omitzero compares instants), so it comes back in UTC.
func equalValues(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == reflect.TypeOf(time.Time{}) {
		ta, tb := a.Interface().(time.Time), b.Interface().(time.Time)
		_, oa := ta.Zone()
		_, ob := tb.Zone()
		return ta.Equal(tb) && (oa == ob || ta.IsZero())
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValues(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			if !equalValues(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		// nil and empty are one in JSON with omitempty: both are "none".
		if a.Len() != b.Len() {
			return false
		}
		fallthrough
	case reflect.Array:
		for i := range a.Len() {
			if !equalValues(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			if vb := b.MapIndex(k); !vb.IsValid() || !equalValues(a.MapIndex(k), vb) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// TestRestoreOfHugeClaimsFailsFast: a stream of a few bytes that claims a
// billion records, the largest audit log, or a 1 MiB frame is refused at
// once, allocating little, and leaves the state as it was.
func TestRestoreOfHugeClaimsFailsFast(t *testing.T) {
	for name, data := range hugeClaims() {
		t.Run(name, func(t *testing.T) {
			if len(data) > 200 {
				t.Fatalf("the input is %d bytes", len(data))
			}
			f := populated(t, 3)
			before := state(t, f)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			err := f.Restore(io.NopCloser(bytes.NewReader(data)))
			took := time.Since(start)
			runtime.ReadMemStats(&m1)
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore: %v, want ErrBadSnapshot", err)
			}
			if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 4<<20 {
				t.Errorf("a %d-byte stream made Restore allocate %d KiB", len(data), alloc>>10)
			}
			if took > 100*time.Millisecond {
				t.Errorf("refusing took %v", took)
			}
			if state(t, f) != before {
				t.Fatal("a refused restore changed the state")
			}
		})
	}
}

// hugeClaims are short snapshot streams whose headers claim a lot.
func hugeClaims() map[string][]byte {
	stream := func(meta string, rest ...string) []byte {
		b := append([]byte(snapshotMagic), snapshotVersion)
		b = binary.AppendUvarint(b, uint64(len(meta)))
		b = append(b, meta...)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	return map[string][]byte{
		"a billion records":        stream(`{"applied_index":5,"initialized":true,"records":1000000000,"audit_entries":0}`),
		"the largest audit log":    stream(`{"applied_index":5,"records":0,"audit_entries":100000}`),
		"too large an audit log":   stream(`{"applied_index":5,"records":0,"audit_entries":100001}`),
		"negative counts":          stream(`{"applied_index":5,"records":-1,"audit_entries":0}`),
		"a 1 MiB frame":            stream(`{"records":1,"audit_entries":0}`, string(binary.AppendUvarint(nil, 1<<20)), "{}"),
		"a frame past the limit":   stream(`{"records":1,"audit_entries":0}`, string(binary.AppendUvarint(nil, 1<<20+1))),
		"a 2^63 frame":             stream(`{"records":1,"audit_entries":0}`, string(binary.AppendUvarint(nil, 1<<63))),
		"an overlong varint":       stream(`{"records":1,"audit_entries":0}`, strings.Repeat("\xff", 11)),
		"records claimed, missing": stream(`{"records":3,"audit_entries":0}`, "\x02{}"),
		// The first record makes a restore build its index: that must not
		// trust the claim either.
		"a billion records, one present": stream(`{"records":1000000000,"audit_entries":0}`, string(binary.AppendUvarint(nil, uint64(len(oneRecord)))), string(oneRecord)),
	}
}

// oneRecord is the encoding of a small valid record.
var oneRecord = keyindex.AppendRecord(nil, &keyindex.Record{ID: "key_1", WorkspaceID: "ws", Type: keyindex.TypeSecret,
	Environment: keyindex.EnvLive, Active: true, CreatedAt: time.Unix(1e9, 0).UTC(), UpdatedAt: time.Unix(1e9, 0).UTC(), Hash: keyindex.HashToken([]byte("t"))})

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzDecodeCommand and
// FuzzRestore with KEYRAFT_WRITE_SEEDS=1 (docs/testing.md).
func TestWriteFuzzSeeds(t *testing.T) {
	if !fuzzseed.Enabled() {
		t.Skip("set KEYRAFT_WRITE_SEEDS=1 to rewrite the seed corpora")
	}
	for _, target := range []string{"FuzzDecodeCommand", "FuzzRestore"} {
		if err := fuzzseed.Reset(target); err != nil {
			t.Fatal(err)
		}
	}
	cmd := func(name string, data []byte) {
		if err := fuzzseed.Write("FuzzDecodeCommand", name, data); err != nil {
			t.Fatal(err)
		}
	}
	enc := func(c *Command) []byte {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rec, _ := newRecord(t, "ws1", 1)
	rot := *rec
	end := t0.Add(time.Hour)
	rot.Rotation = &keyindex.Rotation{PreviousExpiresAt: end, PreviousHash: keyindex.HashToken([]byte("old"))}
	name, active, rl := "new name", false, 10
	scopes, meta := []string{"a:*"}, map[string]string{"k": "v"}
	audit := &AuditEntry{Time: t0, ActorKeyID: "key_root", WorkspaceID: "ws1", Action: "key.create", Target: rec.ID, RequestID: "r1"}
	for n, c := range map[string]*Command{
		"create":           {Op: OpCreate, Record: Store(rec), Audit: audit},
		"create-rotated":   {Op: OpCreate, Record: Store(&rot)},
		"bootstrap":        {Op: OpCreate, Record: Store(rec), Bootstrap: true},
		"update":           {Op: OpUpdate, ID: rec.ID, Time: t0, Update: &Update{Name: &name, Active: &active, RateLimitPerMin: &rl, Scopes: &scopes, Metadata: &meta, ExpiresAt: &end}, Audit: audit},
		"update-clear":     {Op: OpUpdate, ID: rec.ID, Time: t0, Update: &Update{ClearExpiry: true}},
		"rotate":           {Op: OpRotate, ID: rec.ID, Time: t0, Rotate: &Rotate{SHA256: keyindex.HashToken([]byte("n")), KeyPrefix: "sk_live_", PreviousExpiresAt: &end}},
		"revoke":           {Op: OpRevoke, ID: rec.ID, Time: t0},
		"delete":           {Op: OpDelete, ID: rec.ID, Time: t0},
		"import":           {Op: OpImport, Records: []*StoredRecord{Store(rec), Store(&rot)}},
		"usage":            {Op: OpUsage, Usage: []Usage{{ID: rec.ID, Count: 3, LastUsedAt: t0}}},
		"purge":            {Op: OpPurgeRotations, Time: end, IDs: []string{rec.ID, "key_x"}},
		"unknown-op":       {Op: "frobnicate"},
		"create-no-record": {Op: OpCreate},
		"update-no-update": {Op: OpUpdate, ID: rec.ID},
	} {
		cmd(n, enc(c))
	}
	for n, s := range map[string]string{
		"empty":           "",
		"version-0":       "\x00{}",
		"version-2":       "\x02{}",
		"not-json":        "\x01{",
		"null":            "\x01null",
		"array":           "\x01[]",
		"time-offsets":    "\x01" + `{"op":"usage","usage":[{"id":"k","count":1,"last_used_at":"9999-12-31T23:59:59-23:59"},{"id":"k","count":1,"last_used_at":"0000-01-01T00:00:00+23:59"}]}`,
		"time-zero-off":   "\x01" + `{"op":"revoke","id":"k","time":"0001-01-01T01:00:00+01:00"}`,
		"bad-hash":        "\x01" + `{"op":"create","record":{"id":"key_1","sha256":"zz"}}`,
		"huge-count":      "\x01" + `{"op":"usage","usage":[{"id":"k","count":99999999999999999999}]}`,
		"dup-fields":      "\x01" + `{"op":"create","op":"delete","id":"a","id":"b"}`,
		"null-fields":     "\x01" + `{"op":"update","id":"k","update":{"name":null,"scopes":null,"metadata":null,"expires_at":null}}`,
		"rotation-nohash": "\x01" + `{"op":"create","record":{"id":"key_1","sha256":"` + strings.Repeat("ab", 32) + `","rotation":{"previous_expires_at":"2026-01-01T00:00:00Z"}}}`,
		"same-hashes":     "\x01" + `{"op":"create","record":{"id":"key_1","sha256":"` + strings.Repeat("ab", 32) + `","previous_sha256":"` + strings.Repeat("ab", 32) + `","rotation":{"previous_expires_at":"2026-01-01T00:00:00Z"}}}`,
		"invalid-utf8":    "\x01" + `{"op":"create","record":{"id":"key_\xff","name":"\xc3","sha256":"` + strings.Repeat("cd", 32) + `"}}`,
		"escapes":         "\x01" + `{"op":"revoke","id":"key_\u0000\ud800"}`,
		"deep-nesting":    "\x01" + `{"op":"create","record":{"metadata":` + strings.Repeat(`{"a":`, 50) + `1` + strings.Repeat(`}`, 50) + `}}`,
	} {
		cmd(n, []byte(s))
	}

	restore := func(name string, data []byte, fixSum bool, ops []byte) {
		if err := fuzzseed.Write("FuzzRestore", name, data, fixSum, ops); err != nil {
			t.Fatal(err)
		}
	}
	built := buildState(t, []byte("\x08\x00\x01\x80\x82\x03\x05\x02\x06\x01\x12\x03\x07\x01"))
	good := snapshotBytes(t, built)
	restore("valid", good, false, nil)
	restore("valid-fixsum", good, true, nil)
	// Version 1 streams, as builds before binary records wrote them.
	goodV1 := snapshotV1(t, built)
	restore("valid-v1", goodV1, false, nil)
	restore("valid-v1-fixsum", goodV1, true, nil)
	restore("truncated-v1-fixsum", goodV1[:len(goodV1)/2], true, nil)
	restore("empty-state", snapshotBytes(t, New()), false, nil)
	restore("truncated", good[:len(good)/2], false, nil)
	restore("truncated-fixsum", good[:len(good)/2], true, nil)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x04
	restore("bit-flip", flipped, false, nil)
	restore("bit-flip-fixsum", flipped, true, nil)
	restore("trailing", append(append([]byte(nil), good...), 0), false, nil)
	for n, b := range hugeClaims() {
		restore(strings.ReplaceAll(n, " ", "-"), b, false, nil)
		restore(strings.ReplaceAll(n, " ", "-")+"-fixsum", append(b, 0, 0, 0, 0), true, nil)
	}
	restore("garbage", []byte("not a snapshot at all"), false, nil)
	for i, ops := range []string{
		"\x00\x00\x00", // creates
		"\x08\x00\x81\x02\x91\x03\x12\x05\x04\x01",     // bootstrap, create, update, rotate with grace
		"\x00\x00\x00\x01\x22\x00\x13\x00\x04\x00",     // update with everything, revoke, delete
		"\x05\x02\x05\x02\x06\x00\x01\x02",             // imports and usage
		"\x00\x01\x02\x10\x00\x07\x00\x00\x02\x00\x07", // rotate with grace, purge
		strings.Repeat("\x00\x01\x81\x12\x02\x93\x04\x05", 10),
	} {
		restore(fmt.Sprintf("ops-%d", i), nil, false, []byte(ops))
	}
}
