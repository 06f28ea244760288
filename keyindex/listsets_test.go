package keyindex

import (
	"slices"
	"testing"
)

// TestListSetsShareAndForget: keys with the same lists share one block,
// counted; the last release forgets it and its id is reused; past max
// distinct blocks a new one gets id 0.
func TestListSetsShareAndForget(t *testing.T) {
	s := listSets{max: 2}
	a := AppendRecord(nil, &Record{ID: "a", Scopes: []string{"calls:*"}})
	block := listsBlock(a, readView(a).listsAt)
	id := s.acquire(block)
	if id == 0 || s.acquire(slices.Clone(block)) != id {
		t.Fatalf("the same lists got ids %d and another", id)
	}
	if got := s.blocks[id-1]; got.refs != 2 || !slices.Equal(got.scopes, []scopeGrant{{"calls:*", grantPrefix}}) {
		t.Fatalf("set %+v", got)
	}
	other := []byte{2, 1, 'x', 2, 1, 'o', 0} // scopes [x], origins [o], resources nil
	oid := s.acquire(other)
	if oid == 0 || oid == id || !slices.Equal(s.blocks[oid-1].scopes, []scopeGrant{{"x", grantExact}}) {
		t.Fatalf("other lists: id %d, set %+v", oid, s.blocks[oid-1])
	}
	if s.acquire([]byte{1, 0, 0}) != 0 {
		t.Fatal("a third distinct block was interned past max 2")
	}
	s.release(id)
	if _, ok := s.ids[string(block)]; !ok {
		t.Fatal("released while a key still used it")
	}
	s.release(id)
	if _, ok := s.ids[string(block)]; ok || len(s.ids) != 1 {
		t.Fatalf("not forgotten after its last key: %v", s.ids)
	}
	if s.acquire([]byte{1, 0, 0}) != id {
		t.Fatal("the freed id was not reused")
	}
	s.release(0)                 // a free slot: no block
	s.release(listsInRecord | 9) // lists in the record: no block
	if s.bytes != len(other)+3 || len(s.ids) != 2 {
		t.Fatalf("%d bytes in %d blocks, want %d in 2", s.bytes, len(s.ids), len(other)+3)
	}
	s.max = 10
	s.bytes = maxListSetBytes - 3
	if s.acquire([]byte{1, 1, 0}) == 0 {
		t.Fatal("a block that fits maxListSetBytes exactly was refused")
	}
	if s.acquire([]byte{1, 1, 1}) != 0 {
		t.Fatal("a block was interned past maxListSetBytes")
	}
}

// TestListSetsCommon: the common set is the one with the most keys as
// they are acquired, and none once it is forgotten; the precheck matches
// it, and nothing when there is none or no scope is asked for.
func TestListSetsCommon(t *testing.T) {
	var s listSets
	s.max = maxListSets
	a := []byte{2, 1, 'a', 0, 0} // scopes [a]
	b := []byte{2, 1, 'b', 0, 0} // scopes [b]
	if p := s.precheck([]byte("a")); p != (scopePrecheck{}) {
		t.Fatalf("precheck with no sets: %+v", p)
	}
	ida := s.acquire(a)
	if s.common != ida {
		t.Fatalf("common = %d after the first set, want %d", s.common, ida)
	}
	idb := s.acquire(b)
	if s.common != ida {
		t.Fatal("a set with as many keys took over the common one")
	}
	s.acquire(b)
	if s.common != idb {
		t.Fatalf("common = %d, want %d, the set with more keys", s.common, idb)
	}
	if p := s.precheck([]byte("b")); p != (scopePrecheck{set: idb, ok: true}) {
		t.Fatalf("precheck of a granted scope: %+v", p)
	}
	if p := s.precheck([]byte("a")); p != (scopePrecheck{set: idb, ok: false}) {
		t.Fatalf("precheck of a scope the common set lacks: %+v", p)
	}
	if p := s.precheck(nil); p != (scopePrecheck{}) {
		t.Fatalf("precheck with no scope: %+v", p)
	}
	s.release(idb)
	if s.common != idb {
		t.Fatal("a release moved the common set while it still had keys")
	}
	s.release(idb)
	if s.common != 0 {
		t.Fatalf("common = %d after its set was forgotten", s.common)
	}
	s.acquire(a)
	if s.common != ida {
		t.Fatalf("common = %d after acquiring again, want %d", s.common, ida)
	}
}

// TestIndexListSetsFollowKeys: the index's sets follow inserts, replaces
// and deletes, and a replace that changes a key's scopes changes its
// verdicts.
func TestIndexListSetsFollowKeys(t *testing.T) {
	ix := New()
	verify := func(tok, scope string) Code {
		return ix.Verify(&VerifyRequest{Token: []byte(tok), Scope: []byte(scope), NowNs: baseNow.UnixNano()}).Code
	}
	a, aTok := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"calls:*"} })
	b, _ := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"calls:*"} })
	mustInsert(t, ix, a)
	mustInsert(t, ix, b)
	if n := len(ix.st.sets.ids); n != 1 {
		t.Fatalf("%d sets for two keys with the same lists", n)
	}
	a.Scopes = []string{"files:read"}
	if err := ix.Replace(a); err != nil {
		t.Fatal(err)
	}
	if got := verify(aTok, "calls:start"); got != CodeInsufficientScope {
		t.Fatalf("old scope after replace: %s", got)
	}
	if got := verify(aTok, "files:read"); got != CodeValid {
		t.Fatalf("new scope after replace: %s", got)
	}
	if n := len(ix.st.sets.ids); n != 2 {
		t.Fatalf("%d sets after a replace, want 2", n)
	}
	if err := ix.Delete(b.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := ix.st.sets.ids[string(listsBlock(AppendRecord(nil, b), readView(AppendRecord(nil, b)).listsAt))]; ok {
		t.Fatal("the deleted key's lists are still interned")
	}
	if err := ix.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if len(ix.st.sets.ids) != 0 {
		t.Fatalf("sets left with no keys: %v", ix.st.sets.ids)
	}
	// A key in a freed slot starts from no set: storing it releases none.
	c, cTok := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"calls:*"} })
	mustInsert(t, ix, c)
	d, _ := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"calls:*"} })
	mustInsert(t, ix, d)
	if len(ix.st.sets.ids) != 1 || ix.st.sets.blocks[ix.st.sets.ids[string(listsBlock(AppendRecord(nil, c), readView(AppendRecord(nil, c)).listsAt))]-1].refs != 2 {
		t.Fatalf("sets after reusing freed slots: %+v", ix.st.sets.blocks)
	}
	if got := verify(cTok, "calls:start"); got != CodeValid {
		t.Fatalf("key in a reused slot: %s", got)
	}
}
