package cluster

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// logStore is the raft-boltdb store (log and stable store in raft.db) that
// also lets go of the file's pages it no longer needs in memory.
//
// Bolt reads its file through a read-only shared mmap, and its writes read
// the pages they rewrite through it: deleting a range of entries (log
// compaction after a snapshot) touched most of the deleted bytes. Every
// page touched stays mapped, and counts in the node's resident memory, until
// the file is closed: after a bulk import of a million keys, about 110 MB
// of log that snapshots had already truncated (700 MB at ten million).
// Appends touch too: each rewrites the last leaf, copying the entry before
// it. dropMapped tells the kernel the mapping's pages are not needed
// (MADV_DONTNEED): they leave the process but stay in the page cache
// (bolt writes with pwrite, never through the mapping), and a later read
// faults them back in with the same bytes. It runs after every compaction,
// after every dropMappedAfter bytes of entries stored, and every
// dropMappedEvery (for pages that reads fault in: a follower far behind is
// sent entries from bolt; and for what the last appends before a pause
// touched, under dropMappedAfter).
type logStore struct {
	// Not embedded: every method raft calls is forwarded below, so a write
	// a later raft-boltdb adds cannot bypass mapMu unnoticed.
	bolt *raftboltdb.BoltStore
	path string // absolute, symlinks resolved: as /proc/self/maps names it

	// Only a write transaction grows the file and remaps it (and Close
	// unmaps it). Writes share mapMu; dropMapped holds it alone, so the
	// ranges it advises are bolt's mapping and nothing that took its place.
	mapMu sync.RWMutex

	stored    atomic.Uint64 // bytes of entries stored since the last dropMapped
	dropAfter uint64        // dropMappedAfter (tests lower it)
	// dropPages is dropFileMappings; tests wrap it to check mapMu is held.
	dropPages func(path string) (covered uint64)
}

const (
	// 4 MiB, not more: an append also touches the entry before it (an
	// import is 2.4 MB), so with 16 MiB a node that had just imported a
	// million keys still held about 40 MB of the file (`benchrun -only
	// scale`, 2026-12-06). A drop is a read of /proc/self/maps and one
	// madvise over the pages still resident: well under a millisecond.
	dropMappedAfter = 4 << 20
	// 5 s, not 30: a node that had just imported a million keys held 12
	// MiB more of the file than empty for up to 30 s after the import
	// (`benchrun -only scale`, 2026-12-06, session 7), when its collected
	// heap was otherwise back at its size; a drop costs well under a
	// millisecond.
	dropMappedEvery = 5 * time.Second
)

func openLogStore(path string, noSync bool) (*logStore, error) {
	// As etcd runs bolt: without writing the freelist at every commit
	// (it is rebuilt by a scan when the file is opened), and with the
	// freelist kept as a map. The log is appended and truncated at the
	// front, so after a compaction most of the file is free pages, and an
	// array freelist of them was written out, allocated and merged again
	// on every append.
	opts := &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}
	bs, err := raftboltdb.New(raftboltdb.Options{Path: path, NoSync: noSync, BoltOptions: opts})
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		bs.Close()
		return nil, err
	}
	return &logStore{bolt: bs, path: abs, dropAfter: dropMappedAfter, dropPages: dropFileMappings}, nil
}

// Reads never remap the file, and a page dropped under them comes back.

func (s *logStore) FirstIndex() (uint64, error)          { return s.bolt.FirstIndex() }
func (s *logStore) LastIndex() (uint64, error)           { return s.bolt.LastIndex() }
func (s *logStore) GetLog(idx uint64, l *raft.Log) error { return s.bolt.GetLog(idx, l) }
func (s *logStore) Get(k []byte) ([]byte, error)         { return s.bolt.Get(k) }
func (s *logStore) GetUint64(k []byte) (uint64, error)   { return s.bolt.GetUint64(k) }
func (s *logStore) StoreLog(l *raft.Log) error           { return s.StoreLogs([]*raft.Log{l}) }

func (s *logStore) StoreLogs(logs []*raft.Log) error {
	s.mapMu.RLock()
	err := s.bolt.StoreLogs(logs)
	s.mapMu.RUnlock()
	var n uint64
	for _, l := range logs {
		n += uint64(len(l.Data))
	}
	if s.stored.Add(n) >= s.dropAfter {
		s.dropMapped()
	}
	return err
}

func (s *logStore) DeleteRange(min, max uint64) error {
	s.mapMu.RLock()
	err := s.bolt.DeleteRange(min, max)
	s.mapMu.RUnlock()
	s.dropMapped()
	return err
}

func (s *logStore) Set(k, v []byte) error {
	s.mapMu.RLock()
	defer s.mapMu.RUnlock()
	return s.bolt.Set(k, v)
}

func (s *logStore) SetUint64(k []byte, v uint64) error {
	s.mapMu.RLock()
	defer s.mapMu.RUnlock()
	return s.bolt.SetUint64(k, v)
}

func (s *logStore) Close() error {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	return s.bolt.Close()
}

// dropMapped releases every page of raft.db's mapping from the process.
func (s *logStore) dropMapped() {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	s.stored.Store(0)
	s.dropPages(s.path)
}
