package fsm

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/keyindex"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// newRecord returns a record with a fresh token; the token is returned too.
func newRecord(t *testing.T, ws string, n int) (*keyindex.Record, string) {
	t.Helper()
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	id, err := keyindex.NewID(t0.Add(time.Duration(n)*time.Millisecond), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &keyindex.Record{
		ID: id, WorkspaceID: ws, Name: fmt.Sprintf("key %d", n), Type: keyindex.TypeSecret, Environment: keyindex.EnvLive,
		Scopes: []string{"calls:*"}, AllowedOrigins: []string{}, AllowedResources: []string{},
		Metadata: map[string]string{"n": fmt.Sprint(n)}, Active: true, CreatedAt: t0, UpdatedAt: t0, CreatedBy: "key_root",
	}
	r.SetToken(tok)
	return r, tok.Plaintext
}

// applier feeds commands to an FSM as raft would, with increasing indexes.
type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func (a *applier) apply(c *Command) *Result {
	a.t.Helper()
	b, err := Encode(c)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	res := a.f.Apply(&raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: b}).(*Result)
	if a.f.AppliedIndex() != a.index {
		a.t.Fatalf("applied index %d, want %d", a.f.AppliedIndex(), a.index)
	}
	return res
}

func (a *applier) mustApply(c *Command) *Result {
	a.t.Helper()
	res := a.apply(c)
	if res.Err != nil {
		a.t.Fatalf("%s: %v", c.Op, res.Err)
	}
	return res
}

func verify(f *FSM, token string, at time.Time) keyindex.Code {
	return f.Index().Verify(&keyindex.VerifyRequest{Token: []byte(token), NowNs: at.UnixNano()}).Code
}

func TestEveryCommand(t *testing.T) {
	a := &applier{t: t, f: New()}
	rec, tok := newRecord(t, "ws1", 1)

	// create, with its audit entry
	a.mustApply(&Command{Op: OpCreate, Record: Store(rec), Audit: &AuditEntry{Time: t0, ActorKeyID: "key_root", WorkspaceID: "ws1", Action: "key.create", Target: rec.ID, RequestID: "r1"}})
	if got := verify(a.f, tok, t0); got != keyindex.CodeValid {
		t.Fatalf("after create: %v", got)
	}
	if res := a.apply(&Command{Op: OpCreate, Record: Store(rec)}); !errors.Is(res.Err, ErrConflict) {
		t.Fatalf("second create of the same id: %v, want conflict", res.Err)
	}

	// update
	name, active, limit := "renamed", false, 7
	exp := t0.Add(time.Hour)
	res := a.mustApply(&Command{Op: OpUpdate, ID: rec.ID, Time: t0.Add(time.Second), Update: &Update{Name: &name, Active: &active, RateLimitPerMin: &limit, ExpiresAt: &exp}})
	got := a.f.Index().Get(rec.ID)
	if got.Name != "renamed" || got.Active || got.RateLimitPerMin != 7 || !got.ExpiresAt.Equal(exp) || !got.UpdatedAt.Equal(t0.Add(time.Second)) || !reflect.DeepEqual(res.Record, got) {
		t.Fatalf("update not applied: %+v", got)
	}
	if code := verify(a.f, tok, t0); code != keyindex.CodeKeyDisabled {
		t.Fatalf("disabled key verifies as %v", code)
	}
	active = true
	a.mustApply(&Command{Op: OpUpdate, ID: rec.ID, Time: t0, Update: &Update{Active: &active, ClearExpiry: true}})
	if got := a.f.Index().Get(rec.ID); got.ExpiresAt != nil || !got.Active {
		t.Fatalf("clear expiry / re-enable not applied: %+v", got)
	}

	// rotate with grace: both tokens valid until the grace ends
	newTok, _ := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
	graceEnd := t0.Add(time.Minute)
	a.mustApply(&Command{Op: OpRotate, ID: rec.ID, Time: t0, Rotate: &Rotate{SHA256: newTok.Hash, KeyPrefix: newTok.Prefix, KeySuffix: newTok.Suffix, Preview: newTok.Preview, PreviousExpiresAt: &graceEnd}})
	if verify(a.f, tok, t0) != keyindex.CodeValid || verify(a.f, newTok.Plaintext, t0) != keyindex.CodeValid {
		t.Fatal("old and new tokens must both verify during the grace period")
	}
	if verify(a.f, tok, graceEnd) != keyindex.CodeKeyNotFound {
		t.Fatal("old token must stop at the end of the grace period")
	}

	// purge: not before the grace ends, then the old hash is gone
	a.mustApply(&Command{Op: OpPurgeRotations, IDs: []string{rec.ID}, Time: graceEnd.Add(-time.Second)})
	if a.f.Index().Get(rec.ID).Rotation == nil {
		t.Fatal("purge before the grace ended dropped the rotation")
	}
	a.mustApply(&Command{Op: OpPurgeRotations, IDs: []string{rec.ID}, Time: graceEnd})
	if a.f.Index().Get(rec.ID).Rotation != nil || a.f.Index().HashInUse(rec.Hash) {
		t.Fatal("purge kept the previous hash")
	}

	// usage: counts add up, last_used_at only moves forward, unknown ids are skipped
	a.mustApply(&Command{Op: OpUsage, Usage: []Usage{{ID: rec.ID, Count: 3, LastUsedAt: t0.Add(2 * time.Second)}, {ID: "key_gone", Count: 1, LastUsedAt: t0}}})
	a.mustApply(&Command{Op: OpUsage, Usage: []Usage{{ID: rec.ID, Count: 2, LastUsedAt: t0.Add(time.Second)}}})
	if got := a.f.Index().Get(rec.ID); got.UsageCount != 5 || !got.LastUsedAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("usage: count %d last %v", got.UsageCount, got.LastUsedAt)
	}

	// revoke: final, record kept; a second revoke and any update conflict
	a.mustApply(&Command{Op: OpRevoke, ID: rec.ID, Time: t0.Add(3 * time.Second)})
	if got := a.f.Index().Get(rec.ID); got.RevokedAt == nil || got.Active {
		t.Fatalf("revoke not applied: %+v", got)
	}
	if verify(a.f, newTok.Plaintext, t0) != keyindex.CodeKeyRevoked {
		t.Fatal("revoked key must verify as KEY_REVOKED")
	}
	for _, c := range []*Command{
		{Op: OpRevoke, ID: rec.ID, Time: t0},
		{Op: OpUpdate, ID: rec.ID, Time: t0, Update: &Update{Active: &active}},
		{Op: OpRotate, ID: rec.ID, Time: t0, Rotate: &Rotate{SHA256: keyindex.Hash{1}}},
	} {
		if res := a.apply(c); !errors.Is(res.Err, ErrConflict) {
			t.Fatalf("%s of a revoked key: %v, want conflict", c.Op, res.Err)
		}
	}

	// delete
	a.mustApply(&Command{Op: OpDelete, ID: rec.ID})
	if a.f.Index().Get(rec.ID) != nil || verify(a.f, newTok.Plaintext, t0) != keyindex.CodeKeyNotFound {
		t.Fatal("delete left the key")
	}
	if res := a.apply(&Command{Op: OpDelete, ID: rec.ID}); !errors.Is(res.Err, ErrNotFound) {
		t.Fatalf("delete of a missing key: %v", res.Err)
	}

	// import: atomic
	r1, t1 := newRecord(t, "ws2", 2)
	r2, _ := newRecord(t, "ws2", 3)
	dup := r2.Clone()
	dup.ID = "key_dup"
	if res := a.apply(&Command{Op: OpImport, Records: []*StoredRecord{Store(r1), Store(r2), Store(dup)}}); !errors.Is(res.Err, ErrConflict) {
		t.Fatalf("import with a duplicate hash: %v", res.Err)
	}
	if a.f.Index().Len() != 0 {
		t.Fatal("failed import changed the index")
	}
	a.mustApply(&Command{Op: OpImport, Records: []*StoredRecord{Store(r1), Store(r2)}})
	if a.f.Index().Len() != 2 || verify(a.f, t1, t0) != keyindex.CodeValid {
		t.Fatal("import did not land")
	}

	// audit: only successful audited commands, in order
	entries, _ := a.f.Audit(AuditQuery{})
	if len(entries) != 1 || entries[0].Seq != 1 || entries[0].RequestID != "r1" {
		t.Fatalf("audit entries: %+v", entries)
	}
}

func TestBootstrapInitializes(t *testing.T) {
	a := &applier{t: t, f: New()}
	rec, _ := newRecord(t, keyindex.RootWorkspace, 1)
	if a.f.Initialized() {
		t.Fatal("new FSM is initialized")
	}
	a.mustApply(&Command{Op: OpCreate, Record: Store(rec), Bootstrap: true})
	if !a.f.Initialized() {
		t.Fatal("bootstrap create did not initialize")
	}
}

func TestDecodeRejectsUnknownVersionsAndGarbage(t *testing.T) {
	good, _ := Encode(&Command{Op: OpDelete, ID: "key_x"})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"version 0":    append([]byte{0}, good[1:]...),
		"newer":        append([]byte{Version + 1}, good[1:]...),
		"not json":     {Version, '{', 'x'},
		"wrong type":   append([]byte{Version}, `{"op":5}`...),
		"wrong record": append([]byte{Version}, `{"op":"create","record":"x"}`...),
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	c, err := Decode(good)
	if err != nil || c.Op != OpDelete || c.ID != "key_x" {
		t.Fatalf("round trip: %+v %v", c, err)
	}
	// A malformed command is answered with an error on every node, not applied.
	f := New()
	res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{Version, '{'}}).(*Result)
	if res.Err == nil || f.AppliedIndex() != 1 {
		t.Fatalf("malformed command: %+v, applied %d", res, f.AppliedIndex())
	}
	// A newer build's command stops this node, before its applied index
	// moves: skipping it would diverge from the nodes that apply it.
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "upgrade this node") {
				t.Fatalf("a newer command: recovered %v, want a stop that says to upgrade", r)
			}
		}()
		f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: append([]byte{Version + 1}, good[1:]...)})
	}()
	if f.AppliedIndex() != 1 {
		t.Fatalf("applied index %d after a newer command, want 1", f.AppliedIndex())
	}
}

// populated returns an FSM with keys in several workspaces, a rotation,
// a revocation, usage and audit entries.
func populated(t *testing.T, n int) *FSM {
	a := &applier{t: t, f: New()}
	var first *keyindex.Record
	for i := 0; i < n; i++ {
		rec, _ := newRecord(t, fmt.Sprintf("ws%d", i%3), i)
		if i == 0 {
			first = rec
		}
		a.mustApply(&Command{Op: OpCreate, Record: Store(rec), Bootstrap: i == 0, Audit: &AuditEntry{Time: t0, Action: "key.create", Target: rec.ID, WorkspaceID: rec.WorkspaceID}})
	}
	newTok, _ := keyindex.GenerateToken(rand.Reader, "acme", keyindex.TypeSecret, keyindex.EnvLive)
	end := t0.Add(time.Hour)
	a.mustApply(&Command{Op: OpRotate, ID: first.ID, Time: t0, Rotate: &Rotate{SHA256: newTok.Hash, KeyPrefix: newTok.Prefix, PreviousExpiresAt: &end}})
	a.mustApply(&Command{Op: OpUsage, Usage: []Usage{{ID: first.ID, Count: 9, LastUsedAt: t0}}})
	return a.f
}

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.Backup().Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// state is everything a snapshot must carry, in comparable form.
func state(t *testing.T, f *FSM) string {
	t.Helper()
	var recs []*StoredRecord
	f.Index().Snapshot().Each(func(r *keyindex.Record) bool { recs = append(recs, Store(r)); return true })
	audit, _ := f.Audit(AuditQuery{Limit: AuditCapacity})
	b, err := json.Marshal(map[string]any{"records": recs, "audit": audit, "init": f.Initialized(), "applied": f.AppliedIndex()})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSnapshotRestoreIsIdentical(t *testing.T) {
	src := populated(t, 200)
	dst := New()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, src)))); err != nil {
		t.Fatal(err)
	}
	if a, b := state(t, src), state(t, dst); a != b {
		t.Fatalf("restored state differs\nsrc %s\ndst %s", a[:200], b[:200])
	}
	// Hashes (not part of JSON answers) must survive too: every hash resolves.
	src.Index().Snapshot().Each(func(r *keyindex.Record) bool {
		got := dst.Index().Get(r.ID)
		if got == nil || got.Hash != r.Hash || !reflect.DeepEqual(got.Rotation, r.Rotation) {
			t.Fatalf("record %s: hashes differ", r.ID)
		}
		return true
	})
	// Snapshotting the restored FSM gives the same bytes: the encoding is stable.
	if !bytes.Equal(snapshotBytes(t, src), snapshotBytes(t, dst)) {
		t.Fatal("snapshot of the restored state differs")
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	a := &applier{t: t, f: populated(t, 10)}
	a.index = a.f.AppliedIndex()
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	before := state(t, a.f)
	// Changes after Snapshot() must not leak into the persisted stream.
	rec, _ := newRecord(t, "ws9", 99)
	a.mustApply(&Command{Op: OpCreate, Record: Store(rec)})
	var buf bytes.Buffer
	if err := snap.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	dst := New()
	if err := dst.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if state(t, dst) != before {
		t.Fatal("snapshot saw a later write")
	}
}

func TestRestoreRefusesDamagedSnapshots(t *testing.T) {
	good := snapshotBytes(t, populated(t, 20))
	damaged := map[string][]byte{
		"empty":          {},
		"header only":    good[:len(snapshotMagic)+1],
		"wrong magic":    append([]byte("NOTKEYRA"), good[8:]...),
		"newer version":  append(append([]byte(snapshotMagic), snapshotVersion+1), good[len(snapshotMagic)+1:]...),
		"no checksum":    good[:len(good)-4],
		"trailing bytes": append(append([]byte(nil), good...), 0),
	}
	for _, cut := range []int{len(good) / 4, len(good) / 2, len(good) - 5} {
		damaged[fmt.Sprintf("truncated at %d", cut)] = good[:cut]
	}
	for _, pos := range []int{20, len(good) / 3, len(good) / 2, len(good) - 2} {
		b := append([]byte(nil), good...)
		b[pos] ^= 0x20
		damaged[fmt.Sprintf("bit flip at %d", pos)] = b
	}
	for name, b := range damaged {
		t.Run(name, func(t *testing.T) {
			f := populated(t, 5)
			before := state(t, f)
			err := f.Restore(io.NopCloser(bytes.NewReader(b)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore: %v, want ErrBadSnapshot", err)
			}
			if state(t, f) != before {
				t.Fatal("a refused restore changed the state")
			}
		})
	}
}

func TestAuditLogIsBoundedAndPaged(t *testing.T) {
	var log auditLog
	for i := 1; i <= AuditCapacity+10; i++ {
		ws := "a"
		if i%2 == 0 {
			ws = "b"
		}
		log.add(AuditEntry{Seq: uint64(i), WorkspaceID: ws})
	}
	all := log.all()
	if len(all) != AuditCapacity || all[0].Seq != 11 || all[len(all)-1].Seq != AuditCapacity+10 {
		t.Fatalf("ring: %d entries, first %d", len(all), all[0].Seq)
	}
	page, next := log.page(AuditQuery{WorkspaceID: "b", Limit: 3})
	if len(page) != 3 || page[0].Seq != AuditCapacity+10 || page[2].Seq != AuditCapacity+6 || next != page[2].Seq {
		t.Fatalf("first page: %+v next %d", page, next)
	}
	page2, _ := log.page(AuditQuery{WorkspaceID: "b", Limit: 2, Before: next})
	if len(page2) != 2 || page2[0].Seq != AuditCapacity+4 {
		t.Fatalf("second page: %+v", page2)
	}
}

func TestDigestTracksStateIncrementally(t *testing.T) {
	src := populated(t, 50)
	// A restore recomputes the digest from scratch: it must equal the one
	// kept up to date command by command.
	dst := New()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, src)))); err != nil {
		t.Fatal(err)
	}
	_, want := src.Digest()
	if _, got := dst.Digest(); got != want {
		t.Fatalf("digest after restore %s, incremental %s", got, want)
	}
	// Every kind of change moves the digest, and undoing it brings it back.
	a := &applier{t: t, f: dst, index: dst.AppliedIndex()}
	rec, _ := newRecord(t, "wsx", 1000)
	a.mustApply(&Command{Op: OpCreate, Record: Store(rec)})
	_, created := dst.Digest()
	if created == want {
		t.Fatal("create did not change the digest")
	}
	name := "other"
	a.mustApply(&Command{Op: OpUpdate, ID: rec.ID, Time: t0, Update: &Update{Name: &name}})
	if _, d := dst.Digest(); d == created {
		t.Fatal("update did not change the digest")
	}
	a.mustApply(&Command{Op: OpDelete, ID: rec.ID})
	if _, d := dst.Digest(); d != want {
		t.Fatal("create+update+delete did not return to the same digest")
	}
	if res := a.apply(&Command{Op: OpDelete, ID: "key_missing", Audit: &AuditEntry{Action: "x"}}); res.Err == nil {
		t.Fatal("delete of a missing key succeeded")
	}
	if _, d := dst.Digest(); d != want {
		t.Fatal("a failed command changed the digest")
	}
	var any *keyindex.Record
	dst.Index().Snapshot().Each(func(r *keyindex.Record) bool { any = r; return false })
	a.mustApply(&Command{Op: OpUsage, Usage: []Usage{{ID: any.ID, Count: 1, LastUsedAt: t0}}})
	if _, d := dst.Digest(); d == want {
		t.Fatal("usage did not change the digest")
	}
}

// TestRestoreOfAnOlderBackup: an operator's restore of a backup taken at a
// lower index replaces the state and its applied index (this state has
// applied nothing after the backup's); the OpRestored entry after it adds
// its audit entry, changes no key and moves the index past the old one.
func TestRestoreOfAnOlderBackup(t *testing.T) {
	backup := snapshotBytes(t, populated(t, 3)) // applied 5
	a := &applier{t: t, f: populated(t, 10)}    // applied 12
	a.index = a.f.AppliedIndex()
	if err := a.f.Restore(io.NopCloser(bytes.NewReader(backup))); err != nil {
		t.Fatal(err)
	}
	if got := a.f.AppliedIndex(); got != 5 {
		t.Fatalf("applied index %d after restoring a backup of index 5 at 12", got)
	}
	restoredKeys := a.f.Index().Len()
	a.mustApply(&Command{Op: OpRestored, Audit: &AuditEntry{Time: t0, Action: "cluster.restore", ActorKeyID: "key_x", Target: "cluster"}})
	page, _ := a.f.Audit(AuditQuery{Limit: 1})
	if a.f.Index().Len() != restoredKeys || restoredKeys != 3 || len(page) != 1 || page[0].Action != "cluster.restore" || page[0].Seq != 13 || a.f.AppliedIndex() != 13 {
		t.Fatalf("after the restore marker: %d keys (restored %d), audit %+v", a.f.Index().Len(), restoredKeys, page)
	}
}

// TestKeepRootRefusesTheLastRootKey: with KeepRoot, a revoke, a disabling
// update or a delete that would leave no active root key is refused, as
// the second of two racing ones would be; without it (a log written before
// the field) the command applies as it did.
func TestKeepRootRefusesTheLastRootKey(t *testing.T) {
	root := func(a *applier, n int) string {
		r, _ := newRecord(t, keyindex.RootWorkspace, n)
		r.Type = keyindex.TypeAdmin
		a.mustApply(&Command{Op: OpCreate, Record: Store(r)})
		return r.ID
	}
	off := false
	for _, last := range []func(id string) *Command{
		func(id string) *Command { return &Command{Op: OpRevoke, ID: id, Time: t0, KeepRoot: true} },
		func(id string) *Command { return &Command{Op: OpDelete, ID: id, KeepRoot: true} },
		func(id string) *Command {
			return &Command{Op: OpUpdate, ID: id, Time: t0, Update: &Update{Active: &off}, KeepRoot: true}
		},
	} {
		a := &applier{t: t, f: New()}
		first, second := root(a, 1), root(a, 2)
		a.mustApply(last(first)) // another root key is left
		if res := a.apply(last(second)); !errors.Is(res.Err, ErrConflict) {
			t.Fatalf("%s of the last root key: %v, want a conflict", last(second).Op, res.Err)
		}
		if got := a.f.Index().Get(second); got == nil || !got.Active || got.RevokedAt != nil {
			t.Fatalf("a refused %s changed the key: %+v", last(second).Op, got)
		}
		unguarded := last(second)
		unguarded.KeepRoot = false
		a.mustApply(unguarded)
	}
	// An expired root key does not count as one left.
	a := &applier{t: t, f: New()}
	working := root(a, 1)
	expired, _ := newRecord(t, keyindex.RootWorkspace, 2)
	expired.Type, expired.ExpiresAt = keyindex.TypeAdmin, &t0
	a.mustApply(&Command{Op: OpCreate, Record: Store(expired)})
	if res := a.apply(&Command{Op: OpRevoke, ID: working, Time: t0.Add(time.Second), KeepRoot: true}); !errors.Is(res.Err, ErrConflict) {
		t.Fatalf("revoking the one unexpired root key: %v, want a conflict", res.Err)
	}
	if a.f.LastActiveRoot(working, t0.Add(-time.Second)) {
		t.Fatal("before the other root key expired, it counted as none")
	}
}

// TestNodeRemovedIsReplicatedState: a node removal is state like any
// other: applied, in the digest, kept by a snapshot, and replaced by a
// restore of one taken before it.
func TestNodeRemovedIsReplicatedState(t *testing.T) {
	a := &applier{t: t, f: populated(t, 2)}
	a.index = a.f.AppliedIndex()
	before := snapshotBytes(t, a.f)
	_, digestBefore := a.f.Digest()
	a.mustApply(&Command{Op: OpNodeRemoved, ID: "node-b", Audit: &AuditEntry{Time: t0, Action: "cluster.remove_node", ActorKeyID: "key_x", Target: "node-b"}})
	if !a.f.NodeRemoved("node-b") || a.f.NodeRemoved("node-c") {
		t.Fatal("NodeRemoved does not reflect the applied removal")
	}
	if _, d := a.f.Digest(); d == digestBefore {
		t.Fatal("the removal did not change the digest")
	}
	if page, _ := a.f.Audit(AuditQuery{Limit: 1}); len(page) != 1 || page[0].Action != "cluster.remove_node" {
		t.Fatalf("audit after the removal: %+v", page)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	if !g.NodeRemoved("node-b") {
		t.Fatal("a snapshot lost the removal")
	}
	_, want := a.f.Digest()
	if _, got := g.Digest(); got != want {
		t.Fatal("the restored state's digest differs")
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(before))); err != nil {
		t.Fatal(err)
	}
	if g.NodeRemoved("node-b") {
		t.Fatal("restoring a backup from before the removal kept it")
	}
}

// failingSink is a snapshot sink whose writes fail.
type failingSink struct{ cancelled bool }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }
func (s *failingSink) Close() error              { return nil }
func (s *failingSink) ID() string                { return "failing" }
func (s *failingSink) Cancel() error             { s.cancelled = true; return nil }

// TestUnsnapshottedCountsRaftSnapshotsOnly: the log volume since the last
// snapshot (what cluster/logsize.go snapshots on) starts anew with a raft
// snapshot, not with a backup, which truncates no log, and a snapshot that
// fails to persist counts its log back.
func TestUnsnapshottedCountsRaftSnapshotsOnly(t *testing.T) {
	f := populated(t, 5)
	bytes, entries := f.Unsnapshotted()
	if bytes == 0 || entries != 7 {
		t.Fatalf("after 7 commands: %d bytes, %d entries", bytes, entries)
	}
	snapshotBytes(t, f) // a backup
	if b, e := f.Unsnapshotted(); b != bytes || e != entries {
		t.Fatalf("a backup reset the count: %d bytes, %d entries, want %d, %d", b, e, bytes, entries)
	}
	snap, _ := f.Snapshot()
	if b, e := f.Unsnapshotted(); b != 0 || e != 0 {
		t.Fatalf("after a snapshot: %d bytes, %d entries", b, e)
	}
	sink := &failingSink{}
	if err := snap.Persist(sink); err == nil || !sink.cancelled {
		t.Fatalf("persist to a failing sink: %v, cancelled %v", err, sink.cancelled)
	}
	snap.Release()
	if b, e := f.Unsnapshotted(); b != bytes || e != entries {
		t.Fatalf("after a failed snapshot: %d bytes, %d entries, want %d, %d", b, e, bytes, entries)
	}
	// Raft may give a snapshot up before Persist: only Release tells.
	snap, _ = f.Snapshot()
	snap.Release()
	if b, e := f.Unsnapshotted(); b != bytes || e != entries {
		t.Fatalf("after a snapshot given up: %d bytes, %d entries, want %d, %d", b, e, bytes, entries)
	}
	// A persisted one keeps the count at what came after it.
	snap, _ = f.Snapshot()
	var out bytesSink
	if err := snap.Persist(&out); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if b, e := f.Unsnapshotted(); b != 0 || e != 0 {
		t.Fatalf("after a persisted snapshot: %d bytes, %d entries", b, e)
	}
}

// bytesSink is a snapshot sink that keeps what is written.
type bytesSink struct{ bytes.Buffer }

func (s *bytesSink) Close() error  { return nil }
func (s *bytesSink) ID() string    { return "bytes" }
func (s *bytesSink) Cancel() error { return nil }

// TestCommandsCarryTheLowestVersionThatAppliesThem: a command is stamped
// with the version that introduced what it uses, not this build's, so that
// older nodes of a rolling upgrade go on applying it.
func TestCommandsCarryTheLowestVersionThatAppliesThem(t *testing.T) {
	for _, c := range []struct {
		cmd  Command
		want byte
	}{
		{Command{Op: OpUsage, Usage: []Usage{{ID: "key_x", Count: 1, LastUsedAt: t0}}}, 4},
		{Command{Op: OpRevoke, ID: "key_x", Time: t0}, 4},
		{Command{Op: OpRevoke, ID: "key_x", Time: t0, KeepRoot: true}, 5},
		{Command{Op: OpRestored}, 5},
		{Command{Op: OpNodeRemoved, ID: "node-x"}, 6},
	} {
		b, err := Encode(&c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != c.want {
			t.Errorf("%s (keep_root %v): version %d, want %d", c.cmd.Op, c.cmd.KeepRoot, b[0], c.want)
		}
		if c.want > Version {
			t.Errorf("%s: version %d above Version %d", c.cmd.Op, c.want, Version)
		}
	}
}

// TestBackupIsWrittenOnce: a backup copies the keys' token hashes (the
// index keeps them in its slots, which change), counts that copy in the
// index's mapped memory, and gives it back once written; writing it again
// is an error, not a crash of the node.
func TestBackupIsWrittenOnce(t *testing.T) {
	f := populated(t, 50)
	base := f.Index().MappedBytes()
	b := f.Backup()
	if held := f.Index().MappedBytes() - base; held < 50*32 {
		t.Fatalf("a backup's copy of 50 hashes counts %d bytes", held)
	}
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("the backup does not read back: %v", err)
	}
	if got := f.Index().MappedBytes(); got != base {
		t.Fatalf("mapped %d bytes after the backup was written, %d before it", got, base)
	}
	if err := b.Write(io.Discard); err == nil {
		t.Fatal("a backup was written twice")
	}
}
