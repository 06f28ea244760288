package fsm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// snapshotV1 writes f's state as a version 1 stream, the format of builds
// before records went binary: every frame JSON, records field by field.
func snapshotV1(t testing.TB, f *FSM) []byte {
	t.Helper()
	s := f.capture()
	b := append([]byte(snapshotMagic), 1)
	frame := func(v any) {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b = append(binary.AppendUvarint(b, uint64(len(j))), j...)
	}
	meta := s.meta
	meta.Records, meta.AuditEntries = s.records.Len(), len(meta.Audit)
	frame(meta)
	for i := range meta.Audit {
		frame(&meta.Audit[i])
	}
	s.records.Each(func(r *keyindex.Record) bool {
		v1 := recordV1{Record: r, SHA256: r.Hash}
		if r.Rotation != nil {
			v1.PreviousSHA256 = &r.Rotation.PreviousHash
		}
		frame(v1)
		return true
	})
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// TestRestoreReadsVersion1: snapshots written before version 2 (on disk,
// or sent by a node not yet upgraded) restore to the same state, digest
// and token hashes, and are written out again as version 2.
func TestRestoreReadsVersion1(t *testing.T) {
	src := populated(t, 50)
	v1 := snapshotV1(t, src)
	dst := New()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	if a, b := state(t, src), state(t, dst); a != b {
		t.Fatalf("restored state differs\nsrc %s\ndst %s", a, b)
	}
	if _, a := src.Digest(); a != digestOf(t, dst) {
		t.Fatal("digest differs after restoring version 1")
	}
	src.Index().Snapshot().Each(func(r *keyindex.Record) bool {
		if got := dst.Index().GetByHash(r.Hash); got == nil || got.ID != r.ID {
			t.Fatalf("record %s not found by its hash", r.ID)
		}
		if r.Rotation != nil && dst.Index().Get(r.ID).Rotation.PreviousHash != r.Rotation.PreviousHash {
			t.Fatalf("record %s lost its previous hash", r.ID)
		}
		return true
	})
	current := snapshotBytes(t, dst)
	if current[len(snapshotMagic)] != snapshotVersion || !bytes.Equal(current, snapshotBytes(t, src)) {
		t.Fatal("a state restored from version 1 is not written as the same current stream")
	}
	if len(current) >= len(v1) {
		t.Errorf("version %d (%d bytes) is not smaller than version 1 (%d)", snapshotVersion, len(current), len(v1))
	}
	damaged := append([]byte(nil), v1...)
	damaged[len(damaged)/2] ^= 1
	if err := New().Restore(io.NopCloser(bytes.NewReader(damaged))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a damaged version 1 stream: %v, want ErrBadSnapshot", err)
	}
}

// TestRestoreReadsOlderVersions: testdata/snapshot-v2.bin was written by
// the build before the compact record layout, snapshot-v3.bin by the build
// before key ids were stored as ULIDs (both the state of populated(t, 30)),
// each with its records beside it as JSON. Each restores to those records,
// hashes included, and is written out again as the current version, which
// is smaller and restores to the same state.
func TestRestoreReadsOlderVersions(t *testing.T) {
	for _, version := range []byte{2, 3} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) { testRestoreReads(t, version) })
	}
}

func testRestoreReads(t *testing.T, version byte) {
	old, err := os.ReadFile(fmt.Sprintf("testdata/snapshot-v%d.bin", version))
	if err != nil {
		t.Fatal(err)
	}
	if old[len(snapshotMagic)] != version {
		t.Fatalf("the fixture is version %d", old[len(snapshotMagic)])
	}
	var want []struct {
		Record   json.RawMessage `json:"record"`
		SHA256   string          `json:"sha256"`
		Previous string          `json:"previous_sha256"`
	}
	j, err := os.ReadFile(fmt.Sprintf("testdata/snapshot-v%d.json", version))
	if err != nil || json.Unmarshal(j, &want) != nil || len(want) == 0 {
		t.Fatalf("reading the fixture's records: %v", err)
	}
	dst := New()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	i := 0
	dst.Index().Snapshot().Each(func(r *keyindex.Record) bool {
		got, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if json.Unmarshal(got, &a) != nil || json.Unmarshal(want[i].Record, &b) != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want[i].Record)
		}
		prev := ""
		if r.Rotation != nil {
			prev = hex.EncodeToString(r.Rotation.PreviousHash[:])
		}
		if hex.EncodeToString(r.Hash[:]) != want[i].SHA256 || prev != want[i].Previous {
			t.Fatalf("record %d: hashes %x / %s, want %s / %s", i, r.Hash, prev, want[i].SHA256, want[i].Previous)
		}
		if found := dst.Index().GetByHash(r.Hash); found == nil || found.ID != r.ID {
			t.Fatalf("record %s not found by its hash", r.ID)
		}
		if found := dst.Index().Get(r.ID); found == nil || found.Hash != r.Hash {
			t.Fatalf("record %s not found by its id", r.ID)
		}
		i++
		return true
	})
	if i != len(want) {
		t.Fatalf("%d records restored, want %d", i, len(want))
	}
	// The same records applied as commands give the same digest: the
	// restored records are held as this version encodes them.
	applied := New()
	a := &applier{t: t, f: applied}
	dst.Index().Snapshot().Each(func(r *keyindex.Record) bool {
		a.mustApply(&Command{Op: OpImport, Records: []*StoredRecord{Store(r)}})
		return true
	})
	if applied.records != dst.records {
		t.Fatal("the restored records digest differently from the same records applied")
	}
	current := snapshotBytes(t, dst)
	again := New()
	if current[len(snapshotMagic)] != snapshotVersion || again.Restore(io.NopCloser(bytes.NewReader(current))) != nil {
		t.Fatal("the restored state does not round-trip as the current version")
	}
	if state(t, again) != state(t, dst) || digestOf(t, again) != digestOf(t, dst) {
		t.Fatalf("the current stream of a version %d state restores to another state", version)
	}
	if len(current) >= len(old) {
		t.Errorf("version %d (%d bytes) is not smaller than version %d (%d)", snapshotVersion, len(current), version, len(old))
	}
	// The same stream relabelled as the current version (its checksum
	// fixed): its records are not in the current layout, and it is refused.
	relabelled := append([]byte(nil), old[:len(old)-4]...)
	relabelled[len(snapshotMagic)] = snapshotVersion
	relabelled = binary.BigEndian.AppendUint32(relabelled, crc32.Checksum(relabelled, castagnoli))
	if err := New().Restore(io.NopCloser(bytes.NewReader(relabelled))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("version %d records in a version %d stream: %v, want ErrBadSnapshot", version, snapshotVersion, err)
	}
}

func digestOf(t *testing.T, f *FSM) string {
	t.Helper()
	_, d := f.Digest()
	return d
}

// TestRecordHashCoversTheReplicatedRecord: the digest sees every field of
// a record, both token hashes included, and nil apart from empty; and it
// does not see what is not replicated state, such as a zone's name.
func TestRecordHashCoversTheReplicatedRecord(t *testing.T) {
	base, _ := newRecord(t, "ws1", 1)
	base.Rotation = &keyindex.Rotation{PreviousExpiresAt: t0.Add(time.Hour), PreviousHash: keyindex.HashToken([]byte("old"))}
	want := recordHash(base)
	for name, change := range map[string]func(*keyindex.Record){
		"hash":          func(r *keyindex.Record) { r.Hash[0] ^= 1 },
		"previous hash": func(r *keyindex.Record) { r.Rotation.PreviousHash[31] ^= 1 },
		"imported":      func(r *keyindex.Record) { r.Imported = true },
		"usage":         func(r *keyindex.Record) { r.UsageCount++ },
		"nil origins":   func(r *keyindex.Record) { r.AllowedOrigins = nil },
		"metadata":      func(r *keyindex.Record) { r.Metadata["n"] += "x" },
		"zone offset":   func(r *keyindex.Record) { r.CreatedAt = r.CreatedAt.In(time.FixedZone("", 3600)) },
		"nanosecond":    func(r *keyindex.Record) { r.UpdatedAt = r.UpdatedAt.Add(1) },
	} {
		r := base.Clone()
		change(r)
		if recordHash(r) == want {
			t.Errorf("changing the %s does not change the record's hash", name)
		}
	}
	named, unnamed := base.Clone(), base.Clone()
	named.CreatedAt = t0.In(time.FixedZone("CET", 3600))
	unnamed.CreatedAt = t0.In(time.FixedZone("", 3600))
	if recordHash(named) != recordHash(unnamed) {
		t.Error("a zone's name changes the record's hash")
	}
}

// TestSnapshotRefusesOversizeFrame: a record longer than restore accepts
// (one stored before the API bounded every field) fails the snapshot's
// write rather than making a snapshot no node could restore.
func TestSnapshotRefusesOversizeFrame(t *testing.T) {
	f := New()
	rec, _ := newRecord(t, "ws1", 1)
	rec.Name = strings.Repeat("n", maxFrame)
	if err := f.Index().Insert(rec); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*snapshot).write(&buf); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("write of an oversize record: %v", err)
	}
}
