package keyindex

import "errors"

// Loader builds a whole new set of keys for an Index from records in their
// binary encoding (AppendRecord), as a snapshot holds them. Each encoding
// is checked as DecodeRecord checks it and stored as it is: restoring by
// decoding every record, re-encoding it and sorting the Records took most
// of the time a node needed to catch up on a million keys. Nothing in the
// index changes until Install.
type Loader struct {
	st       *store
	imported int64
	order    []orderItem // every key, in arrival order until Install sorts them
}

// maxLoaderHint bounds what a size hint reserves up front: the hint may be
// a snapshot's claim, which is only trusted as the records arrive, and a
// few bytes claiming a billion must not allocate much (the first record
// already brings a 64 KiB arena chunk and a 2 MiB slot chunk). Past it the
// tables grow by a quarter as keys come, about 25 rehashes for a million
// (most of them small).
const maxLoaderHint = 1 << 12

// NewLoader returns an empty Loader for about n records.
func NewLoader(n int) *Loader {
	n = min(max(n, 0), maxLoaderHint)
	st := newStore()
	st.byHash.reserve(n)
	st.byID.reserve(n)
	return &Loader{st: st, order: make([]orderItem, 0, n)}
}

// Add checks enc and stores a copy of it; enc may be reused once Add
// returns. A record that is not a valid encoding in the current compact
// layout (as AppendRecord writes it), has no id, or whose id or token hashes
// an earlier record has is refused.
func (l *Loader) Add(enc []byte) error {
	var r Record // aliases enc: nothing below keeps its strings
	if err := decodeRecord(&r, enc, true); err != nil {
		return err
	}
	if enc[0]&flagCompact == 0 {
		// The index reads only the compact layout in place; the snapshot
		// reader re-encodes older records before they get here.
		return errors.New("record: not in the compact layout")
	}
	if r.ID == "" {
		return errors.New("record: no id")
	}
	if enc[1]&formIDULID == 0 {
		if _, keyID := keyIDULID(r.ID); keyID {
			// Version 3 wrote key ids out. Every node must hold the same
			// bytes for a record: the snapshot reader re-encodes those.
			return errors.New("record: key id not in the current layout")
		}
	}
	n, err := l.st.storeEncoded(&r, enc)
	if err != nil {
		return err
	}
	if r.Imported {
		l.imported++
	}
	l.order = append(l.order, orderItem(n))
	l.st.count++
	return nil
}

// Install replaces every key of ix by the loader's. The loader must not be
// used again.
func (ix *Index) Install(l *Loader) {
	st := l.st
	st.insertOrdered(l.order)
	l.order, l.st = nil, nil
	ix.writeMu.Lock()
	defer ix.writeMu.Unlock()
	ix.mu.Lock()
	old := ix.st
	ix.st = st
	ix.imported.Store(l.imported)
	// Only lock holders read slots and tables: the old ones go now, not
	// at the next collection (gigabytes at ten million keys). Its records
	// may still be read by a Decision or a snapshot, and go by cleanup.
	old.freeLocked()
	ix.mu.Unlock()
}
