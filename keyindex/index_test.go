package keyindex

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func TestIndexCRUD(t *testing.T) {
	ix := New()
	r, tok := newTestRecord(t, TypeSecret, nil)
	if ix.Get(r.ID) != nil || ix.GetByHash(r.Hash) != nil || ix.HashInUse(r.Hash) || ix.Len() != 0 {
		t.Fatal("empty index finds something")
	}
	mustInsert(t, ix, r)
	if !same(ix.Get(r.ID), r) || !same(ix.GetByHash(r.Hash), r) || !ix.HashInUse(r.Hash) || ix.Len() != 1 {
		t.Fatal("inserted record not found")
	}
	if ix.GetByHash(HashToken([]byte(tok+"x"))) != nil || ix.Get("key_other") != nil {
		t.Fatal("found a record that is not there")
	}

	// Duplicate id, even with another hash.
	dupID, _ := newTestRecord(t, TypeSecret, func(x *Record) { x.ID = r.ID })
	if err := ix.Insert(dupID); !errors.Is(err, ErrIDExists) {
		t.Fatalf("duplicate id: %v", err)
	}
	// Duplicate hash under another id.
	dupHash, _ := newTestRecord(t, TypeSecret, func(x *Record) { x.Hash = r.Hash })
	if err := ix.Insert(dupHash); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("duplicate hash: %v", err)
	}
	// A new key may not take a hash held by another key's rotation either.
	rot := r.Clone()
	newTok := mustGenerate(t, "", TypeSecret, EnvLive)
	rot.Hash = newTok.Hash
	rot.Rotation = &Rotation{PreviousHash: r.Hash, PreviousExpiresAt: baseNow.Add(time.Hour)}
	if err := ix.Replace(rot); err != nil {
		t.Fatal(err)
	}
	dupPrev, _ := newTestRecord(t, TypeSecret, func(x *Record) { x.Hash = r.Hash })
	if err := ix.Insert(dupPrev); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("hash held by a rotation: %v", err)
	}
	dupPrev2, _ := newTestRecord(t, TypeSecret, func(x *Record) {
		x.Rotation = &Rotation{PreviousHash: newTok.Hash, PreviousExpiresAt: baseNow}
	})
	if err := ix.Insert(dupPrev2); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("rotation hash held by another key: %v", err)
	}
	if ix.Len() != 1 {
		t.Fatalf("Len = %d after failed inserts", ix.Len())
	}
	if !same(ix.Get(r.ID), rot) || !same(ix.GetByHash(newTok.Hash), rot) || ix.GetByHash(r.Hash) != nil {
		t.Fatal("state after rotation wrong")
	}

	// Replace errors.
	missing, _ := newTestRecord(t, TypeSecret, nil)
	if err := ix.Replace(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Replace missing: %v", err)
	}
	other, _ := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, ix, other)
	steal := other.Clone()
	steal.Hash = newTok.Hash
	if err := ix.Replace(steal); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("Replace taking another key's hash: %v", err)
	}
	steal.Hash = r.Hash // the other key's previous hash
	if err := ix.Replace(steal); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("Replace taking another key's previous hash: %v", err)
	}
	if !same(ix.Get(other.ID), other) || !same(ix.GetByHash(other.Hash), other) {
		t.Fatal("failed Replace changed the record")
	}
	// Replacing a record with itself (same hash) is fine.
	renamed := other.Clone()
	renamed.Name = "renamed"
	if err := ix.Replace(renamed); err != nil {
		t.Fatal(err)
	}
	if ix.Get(other.ID).Name != "renamed" || !same(ix.GetByHash(other.Hash), renamed) {
		t.Fatal("Replace did not take effect")
	}

	// A token cannot be its own predecessor, by any path: one at a time,
	// by replacement, or in a batch (as a snapshot restore loads them).
	selfRotated := other.Clone()
	selfRotated.Rotation = &Rotation{PreviousExpiresAt: time.Unix(2e9, 0), PreviousHash: other.Hash}
	if err := ix.Replace(selfRotated); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("Replace with previous hash = current hash: %v", err)
	}
	fresh, _ := newTestRecord(t, TypeSecret, nil)
	fresh.Rotation = &Rotation{PreviousExpiresAt: time.Unix(2e9, 0), PreviousHash: fresh.Hash}
	if err := ix.Insert(fresh); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("Insert with previous hash = current hash: %v", err)
	}
	if err := New().InsertAll([]*Record{fresh}); !errors.Is(err, ErrHashInUse) {
		t.Fatalf("InsertAll with previous hash = current hash: %v", err)
	}

	// Delete removes every hash.
	if err := ix.Delete(rot.ID); err != nil {
		t.Fatal(err)
	}
	if err := ix.Delete(rot.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if ix.Get(rot.ID) != nil || ix.HashInUse(r.Hash) || ix.HashInUse(newTok.Hash) || ix.Len() != 1 {
		t.Fatal("deleted key still present")
	}
	if ids := ix.ExpiredRotations(baseNow.Add(100 * time.Hour).UnixNano()); len(ids) != 0 {
		t.Fatalf("deleted key still rotating: %v", ids)
	}
	if n := countSnapshot(ix); n != 1 {
		t.Fatalf("ordered view has %d records", n)
	}
	// Its hashes are free again.
	again, _ := newTestRecord(t, TypeSecret, func(x *Record) { x.ID = rot.ID; x.Hash = r.Hash })
	mustInsert(t, ix, again)
}

func countSnapshot(ix *Index) int {
	n := 0
	ix.Snapshot().Each(func(*Record) bool { n++; return true })
	return n
}

func TestInsertAllAtomic(t *testing.T) {
	existing, _ := newTestRecord(t, TypeSecret, nil)
	mk := func(n int) []*Record {
		var out []*Record
		for i := 0; i < n; i++ {
			r, _ := newTestRecord(t, TypeSecret, nil)
			out = append(out, r)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		bad  func([]*Record) *Record
		err  error
	}{
		{"id exists in index", func(b []*Record) *Record {
			c := b[0].Clone()
			c.ID = existing.ID
			c.Hash = HashToken([]byte("x1"))
			return c
		}, ErrIDExists},
		{"id twice in batch", func(b []*Record) *Record { c := b[0].Clone(); c.Hash = HashToken([]byte("x2")); return c }, ErrIDExists},
		{"hash in index", func(b []*Record) *Record { c := b[0].Clone(); c.ID = "key_fresh1"; c.Hash = existing.Hash; return c }, ErrHashInUse},
		{"hash twice in batch", func(b []*Record) *Record { c := b[0].Clone(); c.ID = "key_fresh2"; return c }, ErrHashInUse},
		{"previous hash twice in batch", func(b []*Record) *Record {
			c := b[0].Clone()
			c.ID, c.Hash = "key_fresh3", HashToken([]byte("x3"))
			c.Rotation = &Rotation{PreviousHash: b[1].Hash}
			return c
		}, ErrHashInUse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := New()
			mustInsert(t, ix, existing)
			batch := mk(5)
			// The bad record goes last so that earlier ones would have been inserted.
			batch = append(batch, tc.bad(batch))
			if err := ix.InsertAll(batch); !errors.Is(err, tc.err) {
				t.Fatalf("InsertAll: %v, want %v", err, tc.err)
			}
			if ix.Len() != 1 || countSnapshot(ix) != 1 {
				t.Fatalf("InsertAll inserted some records: Len %d", ix.Len())
			}
			for _, r := range batch[:5] {
				if ix.Get(r.ID) != nil || ix.HashInUse(r.Hash) {
					t.Fatalf("record %s partly inserted", r.ID)
				}
			}
			if !same(ix.Get(existing.ID), existing) {
				t.Fatal("existing record changed")
			}
		})
	}
	ix := New()
	batch := mk(10)
	if err := ix.InsertAll(batch); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != 10 {
		t.Fatalf("Len %d", ix.Len())
	}
	for _, r := range batch {
		if !same(ix.GetByHash(r.Hash), r) {
			t.Fatalf("%s missing", r.ID)
		}
	}
	if err := ix.InsertAll(nil); err != nil || ix.Len() != 10 {
		t.Fatal("empty InsertAll")
	}
}

// load installs recs in ix through a Loader, each from one reused buffer
// (Add must copy what it keeps), and returns the first Add error without
// installing anything.
func load(ix *Index, recs ...*Record) error {
	l := NewLoader(len(recs))
	var buf []byte
	for _, r := range recs {
		buf = AppendRecord(buf[:0], r)
		if err := l.Add(buf); err != nil {
			return err
		}
		clear(buf)
	}
	ix.Install(l)
	return nil
}

func TestLoaderInstall(t *testing.T) {
	ix := New()
	oldRec, oldTok := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, ix, oldRec)
	ix.Verify(&VerifyRequest{Token: []byte(oldTok), NowNs: baseNow.UnixNano()})

	a, aTok := newTestRecord(t, TypeSecret, nil)
	b, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Rotation = &Rotation{PreviousHash: HashToken([]byte("prev")), PreviousExpiresAt: baseNow}
		r.Metadata = map[string]string{"team": "x"}
		r.Scopes = []string{"read:*"}
	})
	// Refused records (nothing changes in the index before Install).
	dupHash := a.Clone()
	dupHash.ID = "key_dup"
	dupID := b.Clone()
	dupID.Hash = HashToken([]byte("other"))
	noID := b.Clone()
	noID.ID = ""
	for name, recs := range map[string][]*Record{"same hash": {a, b, dupHash}, "same id": {b, dupID}, "no id": {noID}} {
		if err := load(ix, recs...); err == nil {
			t.Fatalf("%s: loaded", name)
		}
	}
	if err := NewLoader(1).Add(AppendRecord(nil, a)[:20]); err == nil {
		t.Fatal("a truncated encoding was added")
	}
	// The in-place readers read only the compact layout: a record in the
	// older one (which DecodeRecord accepts) must not get in.
	if err := NewLoader(1).Add(appendLegacyRecord(nil, a)); err == nil {
		t.Fatal("a record in the older layout was added")
	}
	// A good one swaps everything; records come in any order.
	if err := load(ix, b, a); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != 2 || ix.Get(oldRec.ID) != nil || ix.HashInUse(oldRec.Hash) || !same(ix.Get(a.ID), a) || !same(ix.Get(b.ID), b) {
		t.Fatal("Install did not swap the index")
	}
	if d := ix.Verify(&VerifyRequest{Token: []byte(oldTok), NowNs: baseNow.UnixNano()}); d.Code != CodeKeyNotFound {
		t.Fatalf("old key after Install: %s", d.Code)
	}
	if d := ix.Verify(&VerifyRequest{Token: []byte(aTok), NowNs: baseNow.UnixNano()}); d.Code != CodeValid {
		t.Fatalf("new key after Install: %s", d.Code)
	}
	if ids := ix.ExpiredRotations(baseNow.UnixNano()); !slices.Equal(ids, []string{b.ID}) {
		t.Fatalf("ExpiredRotations after Install: %v", ids)
	}
	// Usage from before the restore is dropped with it.
	u := ix.DrainUsage()
	if len(u) != 1 || u[0].ID != a.ID || u[0].Count != 1 {
		t.Fatalf("usage after Install: %+v", u)
	}
	if err := load(ix); err != nil || ix.Len() != 0 || countSnapshot(ix) != 0 {
		t.Fatal("an empty load did not empty the index")
	}
}

// A snapshot lists records in (workspace, id) order, whatever order they
// were written in, and a load of them in any order lists the same.
func TestSnapshotOrder(t *testing.T) {
	ix, _ := buildListIndex(t)
	var recs []*Record
	ix.Snapshot().Each(func(r *Record) bool { recs = append(recs, r); return true })
	if len(recs) != ix.Len() || !slices.IsSortedFunc(recs, func(a, b *Record) int {
		return cmp.Or(strings.Compare(a.WorkspaceID, b.WorkspaceID), strings.Compare(a.ID, b.ID))
	}) {
		t.Fatalf("snapshot of %d keys: %d records, not in (workspace, id) order", ix.Len(), len(recs))
	}
	shuffled := slices.Clone(recs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	re := New()
	if err := load(re, shuffled...); err != nil {
		t.Fatal(err)
	}
	// Another history to the same keys (other slots, a slot freed and
	// reused) writes the same bytes.
	other := New()
	extra, _ := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, other, extra)
	for _, r := range shuffled {
		mustInsert(t, other, r)
	}
	if err := other.Delete(extra.ID); err != nil {
		t.Fatal(err)
	}
	encoded := func(ix *Index) []byte {
		var b []byte
		ix.Snapshot().EachEncoded(func(rec []byte) bool { b = append(b, rec...); return true })
		return b
	}
	if !bytes.Equal(encoded(other), encoded(ix)) || !bytes.Equal(encoded(re), encoded(ix)) {
		t.Fatal("equal keys with different histories give different snapshots")
	}
	page, _, err := re.List(ListQuery{Limit: len(recs) + 1})
	if err != nil || len(page) != len(recs) {
		t.Fatalf("list after load: %d records, %v", len(page), err)
	}
	for i := range page {
		if !same(page[i], recs[i]) {
			t.Fatalf("list after load, record %d: %s, want %s", i, page[i].ID, recs[i].ID)
		}
	}
}

// buildListIndex makes 3 workspaces with records of varied owner/type/active.
func buildListIndex(t *testing.T) (*Index, map[string][]*Record) {
	ix := New()
	byWS := map[string][]*Record{}
	types := []KeyType{TypeSecret, TypePublishable, TypeAdmin}
	for _, ws := range []string{"ws_b", "ws_a", "ws_c"} {
		n := map[string]int{"ws_a": 23, "ws_b": 7, "ws_c": 1}[ws]
		for i := 0; i < n; i++ {
			i := i
			r, _ := newTestRecord(t, types[i%3], func(r *Record) {
				r.WorkspaceID = ws
				r.OwnerID = fmt.Sprintf("cust_%d", i%4)
				r.Active = i%5 != 0
				// Ids not inserted in order.
				r.ID = fmt.Sprintf("key_%s_%03d", ws, (i*5)%n) // 5 is coprime with every n
			})
			mustInsert(t, ix, r)
			byWS[ws] = append(byWS[ws], r)
		}
		sort.Slice(byWS[ws], func(i, j int) bool { return byWS[ws][i].ID < byWS[ws][j].ID })
	}
	return ix, byWS
}

func TestListPaging(t *testing.T) {
	ix, byWS := buildListIndex(t)
	tru, fal := true, false
	for _, tc := range []struct {
		name string
		q    ListQuery
		keep func(*Record) bool
	}{
		{"all of ws_a", ListQuery{WorkspaceID: "ws_a"}, nil},
		{"ws_b", ListQuery{WorkspaceID: "ws_b"}, nil},
		{"ws_c", ListQuery{WorkspaceID: "ws_c"}, nil},
		{"unknown ws", ListQuery{WorkspaceID: "ws_zzz"}, nil},
		{"ws before all", ListQuery{WorkspaceID: "ws_0"}, nil},
		{"owner", ListQuery{WorkspaceID: "ws_a", OwnerID: "cust_1"}, func(r *Record) bool { return r.OwnerID == "cust_1" }},
		{"type", ListQuery{WorkspaceID: "ws_a", Type: TypePublishable}, func(r *Record) bool { return r.Type == TypePublishable }},
		{"active", ListQuery{WorkspaceID: "ws_a", Active: &tru}, func(r *Record) bool { return r.Active }},
		{"inactive", ListQuery{WorkspaceID: "ws_a", Active: &fal}, func(r *Record) bool { return !r.Active }},
		{"owner+type+active", ListQuery{WorkspaceID: "ws_a", OwnerID: "cust_0", Type: TypeSecret, Active: &tru},
			func(r *Record) bool { return r.OwnerID == "cust_0" && r.Type == TypeSecret && r.Active }},
		{"every workspace", ListQuery{}, nil},
		{"every workspace, admin", ListQuery{Type: TypeAdmin}, func(r *Record) bool { return r.Type == TypeAdmin }},
	} {
		var want []*Record
		if tc.q.WorkspaceID != "" {
			want = byWS[tc.q.WorkspaceID]
		} else {
			want = append(append(append([]*Record{}, byWS["ws_a"]...), byWS["ws_b"]...), byWS["ws_c"]...)
		}
		if tc.keep != nil {
			want = slices.DeleteFunc(slices.Clone(want), func(r *Record) bool { return !tc.keep(r) })
		}
		for _, limit := range []int{1, 2, 3, 5, 7, 23, 24, 100, 0} {
			t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
				q := tc.q
				q.Limit = limit
				var got []*Record
				for pages := 0; ; pages++ {
					if pages > 100 {
						t.Fatal("paging does not end")
					}
					page, next, err := ix.List(q)
					if err != nil {
						t.Fatal(err)
					}
					eff := limit
					if eff == 0 {
						eff = 100
					}
					if len(page) > eff {
						t.Fatalf("page of %d > limit %d", len(page), eff)
					}
					if next != "" && len(page) != eff {
						t.Fatalf("short page of %d with a next cursor", len(page))
					}
					got = append(got, page...)
					if next == "" {
						break
					}
					q.Cursor = next
				}
				if len(got) != len(want) {
					t.Fatalf("got %d records, want %d: %v", len(got), len(want), ids(got))
				}
				for i := range got {
					if !same(got[i], want[i]) {
						t.Fatalf("record %d = %s, want %s (got %v)", i, got[i].ID, want[i].ID, ids(got))
					}
				}
			})
		}
	}
}

// TestListConcurrentPaging: listings in progress each have their own
// search pivot, so concurrent pagers never see each other's position, and
// no pivot outlives its search.
func TestListConcurrentPaging(t *testing.T) {
	ix, byWS := buildListIndex(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		ws := []string{"ws_a", "ws_b", "ws_c"}[g%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				q := ListQuery{WorkspaceID: ws, Limit: 1 + g%4}
				var got []*Record
				for {
					page, next, err := ix.List(q)
					if err != nil {
						errs <- err
						return
					}
					got = append(got, page...)
					if next == "" {
						break
					}
					q.Cursor = next
				}
				if fmt.Sprint(ids(got)) != fmt.Sprint(ids(byWS[ws])) {
					errs <- fmt.Errorf("%s: got %v, want %v", ws, ids(got), ids(byWS[ws]))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ix.st.pivots.Range(func(k, _ any) bool {
		t.Errorf("pivot %v left behind", k)
		return true
	})
}

func ids(rs []*Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.WorkspaceID + "/" + r.ID
	}
	return out
}

func TestListLastPageHasNoCursor(t *testing.T) {
	ix, byWS := buildListIndex(t)
	page, next, err := ix.List(ListQuery{WorkspaceID: "ws_b", Limit: len(byWS["ws_b"])})
	if err != nil || len(page) != len(byWS["ws_b"]) || next != "" {
		t.Fatalf("exact page: %d records, next %q, %v", len(page), next, err)
	}
	// Filtered-out records after the page do not produce an empty next page.
	tru := true
	all, _, _ := ix.List(ListQuery{WorkspaceID: "ws_a", Active: &tru})
	page, next, _ = ix.List(ListQuery{WorkspaceID: "ws_a", Active: &tru, Limit: len(all)})
	if len(page) != len(all) || next != "" {
		t.Fatalf("filtered exact page: %d records, next %q", len(page), next)
	}
}

func TestListCursorSurvivesChanges(t *testing.T) {
	ix, byWS := buildListIndex(t)
	recs := byWS["ws_a"]
	page, next, err := ix.List(ListQuery{WorkspaceID: "ws_a", Limit: 5})
	if err != nil || len(page) != 5 {
		t.Fatal(err)
	}
	// Delete the record the cursor points at, and one on the next page.
	if err := ix.Delete(page[4].ID); err != nil {
		t.Fatal(err)
	}
	if err := ix.Delete(recs[6].ID); err != nil {
		t.Fatal(err)
	}
	page2, _, err := ix.List(ListQuery{WorkspaceID: "ws_a", Limit: 5, Cursor: next})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{recs[5].ID, recs[7].ID, recs[8].ID, recs[9].ID, recs[10].ID}
	for i, r := range page2 {
		if r.ID != wantIDs[i] {
			t.Fatalf("page 2 = %v, want %v", ids(page2), wantIDs)
		}
	}
}

func TestListBadCursor(t *testing.T) {
	ix, _ := buildListIndex(t)
	_, next, err := ix.List(ListQuery{WorkspaceID: "ws_a", Limit: 2})
	if err != nil || next == "" {
		t.Fatal("no cursor")
	}
	for _, tc := range []struct {
		name string
		q    ListQuery
	}{
		{"garbage", ListQuery{WorkspaceID: "ws_a", Cursor: "!!!not base64!!!"}},
		{"padded base64", ListQuery{WorkspaceID: "ws_a", Cursor: base64.URLEncoding.EncodeToString([]byte("ws_a\x00key_1"))}},
		{"no separator", ListQuery{WorkspaceID: "ws_a", Cursor: base64.RawURLEncoding.EncodeToString([]byte("ws_akey_1"))}},
		{"other workspace", ListQuery{WorkspaceID: "ws_b", Cursor: next}},
		{"other workspace forged", ListQuery{WorkspaceID: "ws_a", Cursor: base64.RawURLEncoding.EncodeToString([]byte("ws_b\x00key_1"))}},
		{"not base64 alphabet", ListQuery{WorkspaceID: "ws_a", Cursor: next + "+/"}},
		{"impossible length", ListQuery{WorkspaceID: "ws_a", Cursor: "AAAAA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, nxt, err := ix.List(tc.q)
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("err = %v (page %d, next %q), want ErrBadCursor", err, len(page), nxt)
			}
			if page != nil || nxt != "" {
				t.Fatal("error with a page")
			}
		})
	}
	// A workspace cursor works for a root listing of every workspace.
	if _, _, err := ix.List(ListQuery{Cursor: next}); err != nil {
		t.Fatalf("root listing with cursor: %v", err)
	}
}

func TestExpiredRotations(t *testing.T) {
	ix := New()
	t1, t2 := baseNow.Add(time.Hour), baseNow.Add(2*time.Hour)
	plain, _ := newTestRecord(t, TypeSecret, nil)
	r1, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Rotation = &Rotation{PreviousHash: HashToken([]byte("p1")), PreviousExpiresAt: t1}
	})
	r2, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Rotation = &Rotation{PreviousHash: HashToken([]byte("p2")), PreviousExpiresAt: t2}
	})
	for _, r := range []*Record{plain, r1, r2} {
		mustInsert(t, ix, r)
	}
	sorted := func(now time.Time) []string {
		ids := ix.ExpiredRotations(now.UnixNano())
		sort.Strings(ids)
		return ids
	}
	for _, tc := range []struct {
		now  time.Time
		want []string
	}{
		{baseNow, nil},
		{t1.Add(-1), nil},
		{t1, []string{r1.ID}},
		{t2.Add(-1), []string{r1.ID}},
		{t2, []string{r1.ID, r2.ID}},
		{t2.Add(time.Hour), []string{r1.ID, r2.ID}},
	} {
		if got := sorted(tc.now); !slices.Equal(got, tc.want) {
			t.Errorf("ExpiredRotations(%v) = %v, want %v", tc.now, got, tc.want)
		}
	}
	// Purging (Replace without rotation) takes a key off the list.
	p := r1.Clone()
	p.Rotation = nil
	if err := ix.Replace(p); err != nil {
		t.Fatal(err)
	}
	if ix.HashInUse(r1.Rotation.PreviousHash) {
		t.Fatal("purged previous hash still in use")
	}
	if got := sorted(t2); !slices.Equal(got, []string{r2.ID}) {
		t.Fatalf("after purge: %v", got)
	}
	// Rotating an existing key puts it on the list.
	q := plain.Clone()
	q.Hash = HashToken([]byte("new"))
	q.Rotation = &Rotation{PreviousHash: plain.Hash, PreviousExpiresAt: t1}
	if err := ix.Replace(q); err != nil {
		t.Fatal(err)
	}
	want := []string{plain.ID, r2.ID}
	sort.Strings(want)
	if got := sorted(t2); !slices.Equal(got, want) {
		t.Fatalf("after rotation: %v, want %v", got, want)
	}
}

func TestSnapshotPointInTime(t *testing.T) {
	ix, byWS := buildListIndex(t)
	snap := ix.Snapshot()
	var before []*Record
	snap.Each(func(r *Record) bool { before = append(before, r); return true })
	total := len(byWS["ws_a"]) + len(byWS["ws_b"]) + len(byWS["ws_c"])
	if snap.Len() != total || len(before) != total {
		t.Fatalf("snapshot has %d/%d records, want %d", snap.Len(), len(before), total)
	}
	inserted := map[string]*Record{}
	for _, recs := range byWS {
		for _, r := range recs {
			inserted[r.ID] = r
		}
	}
	for _, r := range before {
		if !reflect.DeepEqual(r, inserted[r.ID]) {
			t.Fatalf("snapshot record %v, inserted %v", r, inserted[r.ID])
		}
	}
	// Change the index a lot.
	for _, r := range byWS["ws_a"][:10] {
		if err := ix.Delete(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		r, _ := newTestRecord(t, TypeSecret, func(r *Record) { r.WorkspaceID = "ws_a" })
		mustInsert(t, ix, r)
	}
	// A new name and a new token hash: the slot's copy of the hash changes
	// in place, and the snapshot must keep the old one.
	changed := byWS["ws_b"][0].Clone()
	changed.Name = "changed"
	changed.SetToken(mustGenerate(t, "", TypeSecret, EnvLive))
	if err := ix.Replace(changed); err != nil {
		t.Fatal(err)
	}
	var after []*Record
	snap.Each(func(r *Record) bool { after = append(after, r); return true })
	if snap.Len() != total || !reflect.DeepEqual(before, after) {
		t.Fatalf("snapshot changed: %d records", len(after))
	}
	for _, r := range after {
		if r.Name == "changed" {
			t.Fatal("snapshot sees a later Replace")
		}
	}
	if ix.Len() != total-10+200 || countSnapshot(ix) != ix.Len() {
		t.Fatalf("index Len %d", ix.Len())
	}
	// Each stops when fn returns false.
	n := 0
	snap.Each(func(*Record) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("Each visited %d after stop", n)
	}
	// Released, the snapshot has given back its copy of the hashes: reading
	// it is a bug that must not go unnoticed, and releasing again is harmless.
	snap.Release()
	snap.Release()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a released snapshot was read")
			}
		}()
		snap.Each(func(*Record) bool { return true })
	}()
}

func TestSnapshotConcurrentWithWrites(t *testing.T) {
	ix, _ := buildListIndex(t)
	snap := ix.Snapshot()
	want := snap.Len()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 300; i++ {
			r, _ := newTestRecord(t, TypeSecret, nil)
			if err := ix.Insert(r); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				_ = ix.Delete(r.ID)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			n := 0
			snap.Each(func(*Record) bool { n++; return true })
			if n != want {
				t.Errorf("snapshot has %d records, want %d", n, want)
				return
			}
			s2 := ix.Snapshot()
			s2.Each(func(*Record) bool { return true })
			if _, _, err := ix.List(ListQuery{Limit: 10}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
}

func TestDrainUsage(t *testing.T) {
	ix := New()
	a, aTok := newTestRecord(t, TypeSecret, nil)
	b, bTok := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"x"} })
	mustInsert(t, ix, a)
	mustInsert(t, ix, b)
	if u := ix.DrainUsage(); len(u) != 0 {
		t.Fatalf("usage before any verify: %+v", u)
	}
	now := baseNow.UnixNano()
	ms := int64(time.Millisecond)
	// Failed verifications are not usage, and do not time it.
	ix.Verify(&VerifyRequest{Token: []byte(bTok), Scope: []byte("y"), NowNs: now - 50})
	// The last use reported is the first since the last drain (recordUse):
	// later ones in the same interval count but leave its time.
	for i := range int64(6) {
		ix.Verify(&VerifyRequest{Token: []byte(aTok), NowNs: now + i*ms})
	}
	ix.Verify(&VerifyRequest{Token: []byte(bTok), NowNs: now})
	u := ix.DrainUsage()
	sort.Slice(u, func(i, j int) bool { return u[i].ID < u[j].ID })
	want := []Usage{{a.ID, 6, now}, {b.ID, 1, now}}
	sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
	if !slices.Equal(u, want) {
		t.Fatalf("DrainUsage = %+v, want %+v", u, want)
	}
	if u := ix.DrainUsage(); len(u) != 0 {
		t.Fatalf("second drain: %+v", u)
	}
	ix.Verify(&VerifyRequest{Token: []byte(bTok), NowNs: now + 10*ms})
	if u := ix.DrainUsage(); !slices.Equal(u, []Usage{{b.ID, 1, now + 10*ms}}) {
		t.Fatalf("third drain: %+v", u)
	}
	// A rotated key's previous token counts for the key.
	bt := mustGenerate(t, "", TypeSecret, EnvLive)
	b2 := b.Clone()
	b2.Hash = bt.Hash
	b2.Rotation = &Rotation{PreviousHash: b.Hash, PreviousExpiresAt: baseNow.Add(time.Hour)}
	if err := ix.Replace(b2); err != nil {
		t.Fatal(err)
	}
	ix.Verify(&VerifyRequest{Token: []byte(bTok), NowNs: now + 20*ms})
	ix.Verify(&VerifyRequest{Token: []byte(bt.Plaintext), NowNs: now + 21*ms})
	if u := ix.DrainUsage(); !slices.Equal(u, []Usage{{b.ID, 2, now + 20*ms}}) {
		t.Fatalf("drain after rotation: %+v", u)
	}
}

func TestDrainUsageConcurrent(t *testing.T) {
	ix := New()
	const keys, workers, perWorker = 8, 8, 2000
	toks := make([]string, keys)
	recs := make([]*Record, keys)
	for i := range toks {
		recs[i], toks[i] = newTestRecord(t, TypeSecret, nil)
		mustInsert(t, ix, recs[i])
	}
	totals := map[string]int64{}
	var mu sync.Mutex
	drain := func() {
		for _, u := range ix.DrainUsage() {
			if u.Count <= 0 {
				t.Errorf("usage with count %d", u.Count)
			}
			if u.LastUsedNs < baseNow.UnixNano() {
				t.Errorf("usage with a last use at %d, before any verification", u.LastUsedNs)
			}
			mu.Lock()
			totals[u.ID] += u.Count
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-stop:
				return
			default:
				drain()
			}
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				k := (w + i) % keys
				if d := ix.Verify(&VerifyRequest{Token: []byte(toks[k]), NowNs: baseNow.UnixNano() + int64(i)}); d.Code != CodeValid {
					t.Errorf("code %s", d.Code)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	<-drained
	drain()
	var sum int64
	for _, r := range recs {
		sum += totals[r.ID]
		if want := int64(workers * perWorker / keys); totals[r.ID] != want {
			t.Errorf("key %s: %d uses counted, want %d", r.ID, totals[r.ID], want)
		}
	}
	if sum != workers*perWorker {
		t.Fatalf("%d uses counted, want %d", sum, workers*perWorker)
	}
}

// Readers (Verify, Get, List) run concurrently with the single writer.
func TestIndexConcurrentReadersAndWriter(t *testing.T) {
	ix := New()
	r, tok := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, ix, r)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()}
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := ix.Verify(req)
				if d.Code != CodeValid && d.Code != CodeKeyDisabled {
					t.Errorf("code %s", d.Code)
					return
				}
				_ = ix.Get(r.ID)
				_, _, _ = ix.List(ListQuery{WorkspaceID: r.WorkspaceID, Limit: 5})
			}
		}()
	}
	cur := r
	for i := 0; i < 500; i++ {
		next := cur.Clone()
		next.Active = i%2 == 0
		if err := ix.Replace(next); err != nil {
			t.Fatal(err)
		}
		other, _ := newTestRecord(t, TypeSecret, nil)
		mustInsert(t, ix, other)
		cur = next
	}
	close(stop)
	wg.Wait()
}

// same reports whether two records are equal: the index hands out copies.
func same(a, b *Record) bool { return reflect.DeepEqual(a, b) }

// TestArenaCompaction: keys replaced over and over (records growing and
// shrinking) and deleted stay readable and verifiable, and the arena
// compacts, holding not much more than the live records.
func TestArenaCompaction(t *testing.T) {
	ix := New()
	type key struct {
		rec *Record
		tok string
	}
	var keys []key
	for i := 0; i < 2000; i++ {
		r, tok := newTestRecord(t, TypeSecret, nil)
		mustInsert(t, ix, r)
		keys = append(keys, key{r, tok})
	}
	for round := 0; round < 30; round++ {
		for i := range keys {
			r := keys[i].rec.Clone()
			r.Name = strings.Repeat("n", (round*7+i)%300)
			r.Metadata = map[string]string{"round": strings.Repeat("m", round*10)}
			if err := ix.Replace(r); err != nil {
				t.Fatal(err)
			}
			keys[i].rec = r
		}
		if round == 10 { // delete every third key
			kept := keys[:0]
			for i, k := range keys {
				if i%3 == 0 {
					if err := ix.Delete(k.rec.ID); err != nil {
						t.Fatal(err)
					}
					continue
				}
				kept = append(kept, k)
			}
			keys = kept
		}
	}
	live := 0
	for _, k := range keys {
		if got := ix.Get(k.rec.ID); !same(got, k.rec) {
			t.Fatalf("%s: got %+v, want %+v", k.rec.ID, got, k.rec)
		}
		d := ix.Verify(&VerifyRequest{Token: []byte(k.tok), NowNs: baseNow.UnixNano()})
		if id := string(keyID(d)); d.Code != CodeValid || id != k.rec.ID {
			t.Fatalf("%s: verify %s %s", k.rec.ID, d.Code, id)
		}
		stored := storedForm(AppendRecord(nil, k.rec))
		live += recordHeaderLen(len(stored)) + len(stored)
	}
	held := 0
	for _, c := range ix.st.arena.chunks {
		held += len(c)
	}
	// Every chunk but the one being filled is at least half live.
	if held > 2*live+arenaChunkLen {
		t.Fatalf("arena holds %d bytes for %d live", held, live)
	}
	if ix.Len() != len(keys) || countSnapshot(ix) != len(keys) {
		t.Fatalf("Len %d, want %d", ix.Len(), len(keys))
	}
}

// TestAddUsage: rewriting usage in the encoding gives exactly the bytes of
// the record changed the plain way (decode, change, encode), for records
// with and without a last_used_at, with every optional field, and for
// usage times before, equal to and after the stored one in other zones.
func TestAddUsage(t *testing.T) {
	east := time.FixedZone("", 9*3600)
	for name, r := range codecRecords(t) {
		if name == "zero" {
			continue
		}
		for _, withLast := range []bool{false, true} {
			rec := r.Clone()
			rec.LastUsedAt = nil
			if withLast {
				rec.LastUsedAt = tp(baseNow.Add(time.Hour))
			}
			ix := New()
			if err := ix.Insert(rec); err != nil {
				t.Fatal(err)
			}
			want := rec.Clone()
			for i, u := range []struct {
				count int64
				at    time.Time
			}{
				{3, baseNow},
				{1, baseNow.Add(time.Hour).In(east)},
				{2, baseNow.Add(time.Hour + time.Nanosecond).In(east)},
				{1 << 40, baseNow.Add(2 * time.Hour)},
				{5, baseNow.Add(90 * time.Minute)},
			} {
				if want.LastUsedAt == nil || u.at.After(*want.LastUsedAt) {
					want.LastUsedAt = tp(u.at)
				}
				want.UsageCount += u.count
				wantBefore := AppendRecord(nil, ix.Get(rec.ID))
				var before, after []byte
				ok := ix.AddUsage(rec.ID, u.count, u.at, func(b, a []byte) {
					before, after = bytes.Clone(b), bytes.Clone(a)
				})
				if !ok {
					t.Fatalf("%s: usage %d: key not found", name, i)
				}
				if !bytes.Equal(before, wantBefore) {
					t.Fatalf("%s: usage %d: before is not the stored encoding", name, i)
				}
				if wantAfter := AppendRecord(nil, want); !bytes.Equal(after, wantAfter) {
					t.Fatalf("%s (last used %v): usage %d:\n got %q\nwant %q", name, withLast, i, after, wantAfter)
				}
				if got := ix.Get(rec.ID); !same(got, want) {
					t.Fatalf("%s: usage %d: Get = %+v, want %+v", name, i, got, want)
				}
			}
		}
	}
	if New().AddUsage("key_unknown", 1, baseNow, func(_, _ []byte) { t.Fatal("changed called for an unknown key") }) {
		t.Fatal("usage of an unknown key was applied")
	}
}

// A key's slot is most of the index's fixed cost per key (docs/design-notes.md,
// "Memory"): a new field must find room, not grow every key by 8 bytes.
func TestSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != 64 {
		t.Fatalf("slot is %d bytes, want 64: one cache line", got)
	}
}

// TestIDForms: ids NewID writes are stored as their ULID's bytes and every
// other id as its string (the API makes none, but a command or snapshot
// may carry any). Both kinds are found by
// id, listed in the order of their strings, paged through by cursor, and
// shown as written in a verification's id and answer.
func TestIDForms(t *testing.T) {
	ids := map[string]bool{ // id → stored as a ULID
		"key_01ARZ3NDEKTSV4RRFFQ69G5FAV":  true,
		"key_7ZZZZZZZZZZZZZZZZZZZZZZZZZ":  true,  // the largest ULID
		"key_00000000000000000000000000":  true,  // the smallest
		"key_01arz3ndektsv4rrffq69g5fav":  false, // lower case: not how NewID writes it
		"key_8ZZZZZZZZZZZZZZZZZZZZZZZZZ":  false, // past 128 bits
		"key_01ARZ3NDEKTSV4RRFFQ69G5FA":   false, // one short
		"key_01ARZ3NDEKTSV4RRFFQ69G5FAW":  true,
		"key_01ARZ3NDEKTSV4RRFFQ69G5FAV0": false, // one long
		"key_A":                           false,
		"abc":                             false,
		"zzz":                             false,
		"key_":                            false,
	}
	ix := New()
	toks := map[string]string{}
	for id := range ids {
		r, tok := newTestRecord(t, TypeSecret, func(r *Record) { r.ID, r.WorkspaceID = id, "ws_forms" })
		if err := ix.Insert(r); err != nil {
			t.Fatal(err)
		}
		toks[id] = tok
	}
	want := slices.Sorted(maps.Keys(ids))
	for _, id := range want {
		n, ok := ix.st.findID(id)
		if !ok {
			t.Fatalf("%s not found by id", id)
		}
		if got := readHead(ix.st.rec(n)).id; got.ulid != ids[id] || got.String() != id {
			t.Errorf("%s stored as %q (ULID %v), want ULID %v", id, got.raw, got.ulid, ids[id])
		}
		if r := ix.Get(id); r == nil || r.ID != id {
			t.Errorf("Get(%s) = %+v", id, r)
		}
		d := ix.Verify(&VerifyRequest{Token: []byte(toks[id]), NowNs: baseNow.UnixNano()})
		var body struct {
			KeyID string `json:"key_id"`
		}
		if err := json.Unmarshal(append(d.AppendValidBody(nil), `{}}`...), &body); err != nil || body.KeyID != id {
			t.Errorf("%s: answer's key_id %q (%v)", id, body.KeyID, err)
		}
		if got := string(keyID(d)); d.Code != CodeValid || got != id {
			t.Errorf("%s: verify %s, id %q", id, d.Code, got)
		}
	}
	for _, near := range []string{"key_01ARZ3NDEKTSV4RRFFQ69G5FAX", "key_01arz3ndektsv4rrffq69g5faw", "ab"} {
		if ix.Get(near) != nil {
			t.Errorf("Get(%s) found a key", near)
		}
	}
	all, _, err := ix.List(ListQuery{WorkspaceID: "ws_forms", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range all {
		got = append(got, r.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed\n%q\nwant\n%q", got, want)
	}
	got = nil
	for cursor := ""; ; {
		page, next, err := ix.List(ListQuery{WorkspaceID: "ws_forms", Limit: 1, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged\n%q\nwant\n%q", got, want)
	}
}

// keyID is the id of the key d matched.
func keyID(d Decision) string {
	k := d.Key()
	return string(k.AppendID(nil))
}
