package keyindex

import "unsafe"

// listSets interns the lists of keys (scopes, origins and resources, as
// their encoding writes them): each distinct lists block is kept once, and
// a key's slot names its block by a small id. Keys mostly share their
// lists (a product has a few scope sets), so the blocks stay few and in
// the CPU's caches, and a block's scopes are split once, here, rather than
// parsed from the key's record at each verification: a request that names
// only a scope, of a key that is not publishable, is decided by matching
// the scope against them (store.listsCode). In bench/results/latest.json
// of session 10 that put the in-process decision at 1K keys at 1.38× the
// floor, from 1.41–1.56× (bench/README.md).
//
// Nothing requires keys to share lists: past maxListSets distinct blocks
// or maxListSetBytes of them, a new key's slot keeps the offset of its
// lists in its record instead (listsInRecord), and they are read from
// there as before interning. So keys whose lists are all their own cost up
// to 16 MiB of copied blocks and 65,536 small heap objects more, and those
// past the bounds decide as before. The sets are changed under the index's
// write lock and read under its read lock.
type listSets struct {
	max    int               // maxListSets, but for tests
	ids    map[string]uint32 // block → id
	blocks []listSet         // blocks[id-1]
	free   []uint32          // ids of released blocks, for reuse
	bytes  int               // of the blocks
	// common is the id of a set many keys use, the most when it was last
	// set (0 for none): a verification matches the requested scope against
	// its scopes before the key's slot is read (scopePrecheck).
	common uint32
}

type listSet struct {
	block  string
	refs   int
	scopes []scopeGrant // the block's scopes, split and prepared
}

// maxListSets and maxListSetBytes bound the interned blocks, for keys that
// each have lists of their own: their blocks are copies of bytes their
// records hold too.
const (
	maxListSets     = 1 << 16
	maxListSetBytes = 16 << 20
)

// acquire returns the id of block, interning it if new, and counts one
// more key using it; 0 if it is new and the sets are full.
func (s *listSets) acquire(block []byte) uint32 {
	if id, ok := s.ids[string(block)]; ok {
		s.blocks[id-1].refs++
		s.noteUse(id)
		return id
	}
	if len(s.ids) >= s.max || s.bytes+len(block) > maxListSetBytes {
		return 0
	}
	if s.ids == nil {
		s.ids = map[string]uint32{}
	}
	set := newListSet(string(block))
	var id uint32
	if k := len(s.free); k > 0 {
		id = s.free[k-1]
		s.free = s.free[:k-1]
		s.blocks[id-1] = set
	} else {
		s.blocks = append(s.blocks, set)
		id = uint32(len(s.blocks))
	}
	s.ids[set.block] = id
	s.bytes += len(block)
	s.noteUse(id)
	return id
}

// noteUse makes id the common set if it now has more keys than the common
// one. Releases do not move it (only forgetting the common set clears it,
// and the next set acquired takes its place), so it may not be the largest:
// it is a guess that the verify path checks, never trusts.
func (s *listSets) noteUse(id uint32) {
	if s.common == 0 || s.blocks[id-1].refs > s.blocks[s.common-1].refs {
		s.common = id
	}
}

// release counts one key fewer using id, and forgets its block when none
// does. An id of 0 (a free slot) or with listsInRecord is no block.
func (s *listSets) release(id uint32) {
	if id == 0 || id&listsInRecord != 0 {
		return
	}
	set := &s.blocks[id-1]
	if set.refs--; set.refs == 0 {
		delete(s.ids, set.block)
		s.bytes -= len(set.block)
		*set = listSet{}
		s.free = append(s.free, id)
		if s.common == id {
			s.common = 0
		}
	}
}

func newListSet(block string) listSet {
	l := readLists(unsafe.Slice(unsafe.StringData(block), len(block)))
	set := listSet{block: block, refs: 1}
	for sc := range l.scopes.All() {
		set.scopes = append(set.scopes, newScopeGrant(sc))
	}
	return set
}

// scopePrecheck is a requested scope matched against the common set's
// scopes ahead of the key's slot: the verify path computes it while the
// slot's cache miss is outstanding (it depends only on the request), and a
// key whose lists are that set is then decided by one comparison once the
// slot arrives, instead of a walk of its scopes that would start only then.
type scopePrecheck struct {
	set uint32 // 0: no precheck
	ok  bool
}

// decides reports whether the precheck is the answer for a key whose lists
// are lists: they are the set it was matched against (a live key's lists
// are never 0).
func (p scopePrecheck) decides(lists uint32) bool { return p.set != 0 && lists == p.set }

func (s *listSets) precheck(scope []byte) scopePrecheck {
	if s.common == 0 || len(scope) == 0 {
		return scopePrecheck{}
	}
	return scopePrecheck{set: s.common, ok: grantsAllow(s.blocks[s.common-1].scopes, scope)}
}

// scopes are set id's scopes, prepared when it was interned.
func (s *listSets) scopes(id uint32) []scopeGrant { return s.blocks[id-1].scopes }

// block returns the lists of id (not 0), read-only.
func (s *listSets) block(id uint32) []byte {
	b := s.blocks[id-1].block
	return unsafe.Slice(unsafe.StringData(b), len(b))
}

// listsBlock is the lists block of enc, whose lists start at at.
func listsBlock(enc []byte, at int) []byte {
	return enc[at : len(enc)-len(readLists(enc[at:]).rest)]
}
