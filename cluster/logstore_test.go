//go:build linux

package cluster

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

// mappedKiB is the resident size of this process's mappings of path.
func mappedKiB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if _, _, _, name, ok := parseMapsLine(line); ok {
			in = name == path
		} else if rss, found := strings.CutPrefix(line, "Rss:"); found && in {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rss), " kB"))
			if err != nil {
				t.Fatalf("smaps line %q: %v", line, err)
			}
			total += kib
		}
	}
	return total
}

// entry i holds 1 MiB of byte i, so a wrong page read back shows.
func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Data: bytes.Repeat([]byte{byte(i)}, 1<<20)}
}

func checkEntries(t *testing.T, s *logStore, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(l.Data, entry(i).Data) {
			t.Fatalf("entry %d reads back different bytes", i)
		}
	}
}

// openCheckedLogStore opens a store whose page drops check that they hold
// the map lock alone (no bolt write can remap the file meanwhile) and that
// they found bolt's mapping; it returns how many drops covered anything.
func openCheckedLogStore(t *testing.T) (*logStore, *atomic.Int64) {
	s, err := openLogStore(filepath.Join(t.TempDir(), "raft.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var found atomic.Int64
	s.dropPages = func(path string) uint64 {
		if s.mapMu.TryRLock() {
			s.mapMu.RUnlock()
			t.Error("pages dropped while writes may run")
		}
		covered := dropFileMappings(path)
		if covered > 0 {
			found.Add(1)
		}
		return covered
	}
	return s, &found
}

func TestLogStoreDropsMappedPages(t *testing.T) {
	s, found := openCheckedLogStore(t)
	s.dropAfter = 4 << 20
	for i := uint64(1); i <= 40; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if kib := mappedKiB(t, s.path); kib > 8<<10 {
		t.Fatalf("after storing 40 MiB of entries %d KiB of raft.db is resident", kib)
	}
	checkEntries(t, s, 1, 40) // reads every page through the mapping
	if kib := mappedKiB(t, s.path); kib < 30<<10 {
		t.Fatalf("after reading 40 MiB of entries %d KiB of raft.db is resident: the measure is broken", kib)
	}
	s.dropMapped()
	if kib := mappedKiB(t, s.path); kib > 1<<10 {
		t.Fatalf("after dropMapped %d KiB of raft.db is still resident", kib)
	}
	checkEntries(t, s, 1, 40) // the pages come back with the same bytes

	// Compaction drops what it touched.
	if err := s.DeleteRange(1, 30); err != nil {
		t.Fatal(err)
	}
	if kib := mappedKiB(t, s.path); kib > 1<<10 {
		t.Fatalf("after DeleteRange %d KiB of raft.db is still resident", kib)
	}
	checkEntries(t, s, 31, 40)
	if found.Load() == 0 {
		t.Fatal("no drop found raft.db's mapping")
	}
}

// Dropping pages while entries are written (which grows and remaps the
// file) and read loses nothing.
func TestLogStoreDropMappedDuringWrites(t *testing.T) {
	s, _ := openCheckedLogStore(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.dropMapped()
			}
		}
	}()
	for i := uint64(1); i <= 60; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
		checkEntries(t, s, max(1, i-3), i)
		if i%20 == 0 {
			if err := s.DeleteRange(i-19, i-10); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	checkEntries(t, s, 51, 60)
}

// Bolt does not write its freelist (openLogStore): on reopening it is
// rebuilt from the file, entries read back, and new ones reuse the pages
// that truncating the log freed instead of growing the file.
func TestLogStoreReopenReusesFreePages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := openLogStore(path, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 30); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	if s, err = openLogStore(path, true); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, 31, 40)
	for i := uint64(41); i <= 60; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatal(err)
		}
	}
	checkEntries(t, s, 31, 60)
	if after := size(); after > before {
		t.Fatalf("raft.db grew from %d to %d MiB although 30 MiB of it was free", before>>20, after>>20)
	}
}
