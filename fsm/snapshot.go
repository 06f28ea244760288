package fsm

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/keyindex"
)

// Snapshot stream layout:
//
//	magic "KEYRAFTS" | version byte | frame(meta) | frame(audit entry)… |
//	frame(record)… | CRC-32C of every byte before it (4 bytes, big endian)
//
// A frame is a uvarint length and that many bytes: JSON for the meta and
// audit frames; for records, keyindex's binary encoding. Version 4 writes
// records in its compact layout, which the index stores as they are;
// version 3 (still read) has them compact but with key ids written out,
// version 2 (still read) in the older layout, and version 1 (still read) as
// JSON StoredRecords: all are re-encoded as they are read.
// Records went binary because decoding a million of them as JSON made a
// node catching up by snapshot take tens of seconds. The meta frame gives
// the number of audit and record frames, so a truncated stream is detected
// even before the checksum.
const (
	snapshotMagic   = "KEYRAFTS"
	snapshotVersion = 4
	maxFrame        = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapshotMeta struct {
	AppliedIndex uint64 `json:"applied_index"`
	Initialized  bool   `json:"initialized"`
	// RemovedNodes: OpNodeRemoved's ids, sorted. Absent from snapshots
	// written before it, which had none.
	RemovedNodes []string     `json:"removed_nodes,omitempty"`
	Records      int          `json:"records"`
	AuditEntries int          `json:"audit_entries"`
	Audit        []AuditEntry `json:"-"`
}

type snapshot struct {
	applied uint64
	meta    snapshotMeta
	records *keyindex.Records
	// notPersisted, for raft's snapshots, counts the log they covered back
	// as unsnapshotted (FSM.Snapshot); Persist clears it once it is not
	// needed.
	notPersisted func()
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := s.write(sink)
	if err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.notPersisted = nil
	return nil
}

// Release implements raft.FSMSnapshot. Raft calls it after Persist, or
// instead of it when it gives the snapshot up before (its store refused
// to create one).
func (s *snapshot) Release() {
	s.records.Release()
	if f := s.notPersisted; f != nil {
		s.notPersisted = nil
		f()
	}
}

func (s *snapshot) write(w io.Writer) error {
	if s.records.Released() {
		// Its copy of the index is given back once written (Backup.Write):
		// an error, not the panic reading it would be.
		return errors.New("fsm: this snapshot was already written and released")
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	meta := s.meta
	meta.Records, meta.AuditEntries = s.records.Len(), len(meta.Audit)
	bw.WriteString(snapshotMagic)
	bw.WriteByte(snapshotVersion)
	frame := func(b []byte) error {
		if len(b) > maxFrame {
			// Restore refuses it: a snapshot no node could restore must
			// not replace the log it stands for.
			return fmt.Errorf("a snapshot frame of %d bytes exceeds %d", len(b), maxFrame)
		}
		var lb [binary.MaxVarintLen64]byte
		bw.Write(lb[:binary.PutUvarint(lb[:], uint64(len(b)))])
		_, err := bw.Write(b)
		return err
	}
	jsonFrame := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return frame(b)
	}
	if err := jsonFrame(meta); err != nil {
		return err
	}
	for i := range meta.Audit {
		if err := jsonFrame(&meta.Audit[i]); err != nil {
			return err
		}
	}
	var err error
	// The index stores records in the snapshot's own encoding.
	s.records.EachEncoded(func(rec []byte) bool {
		err = frame(rec)
		return err == nil
	})
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(crc.Sum(nil))
	return err
}

// Backup is a point-in-time copy of the state, to be written out later.
type Backup struct{ s *snapshot }

// Backup captures the state now (cheaply: the index is copy-on-write); the
// stream it writes is the one raft persists, and Restore reads.
func (f *FSM) Backup() Backup {
	f.stateMu.RLock()
	defer f.stateMu.RUnlock()
	return Backup{f.capture()}
}

// AppliedIndex is the Raft index the backup reflects.
func (b Backup) AppliedIndex() uint64 { return b.s.applied }

// Write writes the snapshot stream to w, once: it then lets go of the
// backup's copy of the index (keyindex.Records.Release).
func (b Backup) Write(w io.Writer) error {
	defer b.s.records.Release()
	return b.s.write(w)
}

// ErrBadSnapshot wraps every reason a snapshot stream is refused.
var ErrBadSnapshot = errors.New("bad snapshot")

// CheckSnapshot reads a whole snapshot stream as Restore does, without
// changing any state, and returns the Raft index its state reflects.
func CheckSnapshot(r io.Reader) (appliedIndex uint64, err error) {
	res, err := readSnapshot(r)
	if err != nil {
		return 0, err
	}
	return res.meta.AppliedIndex, nil
}

// restored is a snapshot read and checked, ready to become the state.
type restored struct {
	meta    snapshotMeta
	keys    *keyindex.Loader
	records setHash // the digest of the records
}

// readSnapshot decodes and checks a whole snapshot stream without changing
// any state.
func readSnapshot(r io.Reader) (*restored, error) {
	var meta snapshotMeta
	crc := crc32.New(castagnoli)
	br := bufio.NewReaderSize(r, 256<<10)
	tr := &teeByteReader{r: br, h: crc}
	fail := func(format string, a ...any) (*restored, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, a...))
	}
	head := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(tr, head); err != nil {
		return fail("reading header: %v", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fail("not a keyraft snapshot")
	}
	version := head[len(snapshotMagic)]
	if version == 0 || version > snapshotVersion {
		return fail("version %d not supported (this build reads up to %d)", version, snapshotVersion)
	}
	var buf []byte
	// frame returns the next frame's bytes, valid until the next call.
	frame := func() ([]byte, error) {
		n, err := binary.ReadUvarint(tr)
		if err != nil {
			return nil, fmt.Errorf("reading frame length: %w", err)
		}
		if n > maxFrame {
			return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(tr, buf); err != nil {
			return nil, fmt.Errorf("reading frame: %w", err)
		}
		return buf, nil
	}
	jsonFrame := func(v any) error {
		b, err := frame()
		if err != nil {
			return err
		}
		return json.Unmarshal(b, v)
	}
	if err := jsonFrame(&meta); err != nil {
		return fail("meta: %v", err)
	}
	if meta.Records < 0 || meta.AuditEntries < 0 || meta.AuditEntries > AuditCapacity {
		return fail("meta has impossible counts")
	}
	// Like records below: the counts are only claims until the frames
	// arrive, so a short stream claiming many entries allocates little.
	meta.Audit = make([]AuditEntry, 0, min(meta.AuditEntries, 1<<12))
	for i := 0; i < meta.AuditEntries; i++ {
		var e AuditEntry
		if err := jsonFrame(&e); err != nil {
			return fail("audit entry %d: %v", i, err)
		}
		meta.Audit = append(meta.Audit, e)
	}
	// The loader trusts the count only so far for what it reserves.
	res := &restored{meta: meta, keys: keyindex.NewLoader(meta.Records)}
	for i := 0; i < meta.Records; i++ {
		b, err := frame()
		switch {
		case err != nil:
		case version == 1:
			b, err = reencodeV1(b)
		case version == 2 || version == 3:
			b, err = reencode(b)
		}
		if err == nil {
			err = res.keys.Add(b)
		}
		if err != nil {
			return fail("record %d: %v", i, err)
		}
		res.records.add(encodedRecordHash(b))
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fail("reading checksum: %v", err)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return fail("checksum mismatch")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fail("trailing data after checksum")
	}
	return res, nil
}

// reencode turns a record frame of version 2 (the older binary layout) or
// 3 (compact, with key ids written out) into the current layout.
func reencode(b []byte) ([]byte, error) {
	r, err := keyindex.DecodeRecord(b)
	if err != nil {
		return nil, err
	}
	return keyindex.AppendRecord(nil, r), nil
}

// reencodeV1 turns a version 1 record frame (a JSON StoredRecord) into
// the binary encoding.
func reencodeV1(b []byte) ([]byte, error) {
	var s StoredRecord
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	r, err := s.record()
	if err != nil {
		return nil, err
	}
	return keyindex.AppendRecord(nil, r), nil
}

// teeByteReader feeds every byte read into a hash; ReadUvarint needs a ByteReader.
type teeByteReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (t *teeByteReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	return n, err
}

func (t *teeByteReader) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err == nil {
		t.h.Write([]byte{b})
	}
	return b, err
}
