package fsm

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// randomUsage is a usage command of n entries. With odd set, some ids and
// times are ones encoding/json escapes or refuses, which the hand-written
// form must leave to it.
func randomUsage(r *rand.Rand, n int, odd bool) *Command {
	ids := []string{"key_01JD3ZK4W8Q9V7T6S5R4P3N2M1", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV", "imported-7", "a", "", "a}]b"}
	oddIDs := []string{`key"quoted`, `back\slash`, "a<b", "a>b", "a&b", "caf\u00e9", "tab\tid", "\x7f", "\x80", "\xff"}
	counts := []int64{0, 1, 7, -3, math.MaxInt64, math.MinInt64, 1 << 40}
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("IST", 5*3600+1800), time.FixedZone("W", -7*3600),
		time.FixedZone("E", 23*3600+59*60), time.FixedZone("F", -(23*3600 + 59*60))}
	oddZones := []*time.Location{time.FixedZone("S", 30), time.FixedZone("HS", 3600+30), time.FixedZone("D", 24*3600),
		time.FixedZone("M", -25*3600)}
	c := &Command{Op: OpUsage}
	for range n {
		u := Usage{ID: ids[r.IntN(len(ids))], Count: counts[r.IntN(len(counts))],
			LastUsedAt: time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])}
		switch r.IntN(6) {
		case 0:
			u.LastUsedAt = u.LastUsedAt.Truncate(time.Second) // RFC3339Nano drops the fraction
		case 1:
			u.LastUsedAt = time.Now() // with a monotonic reading
		case 2:
			u.LastUsedAt = time.Date([]int{0, 9999}[r.IntN(2)], 6, 7, 8, 9, 10, r.IntN(1e9), time.UTC) // the years' bounds
		}
		if odd && r.IntN(4) == 0 {
			switch r.IntN(3) {
			case 0:
				u.ID = oddIDs[r.IntN(len(oddIDs))]
			case 1:
				u.LastUsedAt = u.LastUsedAt.In(oddZones[r.IntN(len(oddZones))])
			default:
				u.LastUsedAt = time.Date(10000+r.IntN(3)*-10001, 1, 2, 3, 4, 5, 6, time.UTC) // year 10000 or -1
			}
		}
		c.Usage = append(c.Usage, u)
	}
	return c
}

// The hand-written usage form is encoding/json's, byte for byte, and is
// the one Encode uses for every ordinary usage command; whatever it does
// not take, Encode writes (or refuses) as encoding/json does.
func TestUsageJSONIsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for i := range 3000 {
		c := randomUsage(r, 1+r.IntN(20), i%2 == 1)
		want, jerr := json.Marshal(c)
		got, err := Encode(c)
		if (err != nil) != (jerr != nil) {
			t.Fatalf("Encode error %v, encoding/json's %v, for %+v", err, jerr, c.Usage)
		}
		if err != nil {
			continue
		}
		if !bytes.Equal(got[1:], want) || got[0] != c.version() {
			t.Fatalf("Encode wrote\n%s\nencoding/json\n%s", got[1:], want)
		}
		if _, ok := appendUsageJSON(nil, c); ok {
			fast++
		} else if i%2 == 0 {
			t.Fatalf("an ordinary usage command went to encoding/json: %+v", c.Usage)
		}
	}
	if fast < 1500 {
		t.Fatalf("the hand-written form wrote %d of 3000 commands", fast)
	}
	// A usage command with any other field set (a field added later too)
	// is encoding/json's: the hand-written form would drop it.
	for i := range reflect.TypeFor[Command]().NumField() {
		f := reflect.TypeFor[Command]().Field(i)
		if f.Name == "Op" || f.Name == "Usage" {
			continue
		}
		c := randomUsage(r, 2, false)
		v := reflect.ValueOf(c).Elem().Field(i)
		switch v.Kind() {
		case reflect.Pointer:
			v.Set(reflect.New(f.Type.Elem()))
		case reflect.Slice:
			v.Set(reflect.MakeSlice(f.Type, 0, 0))
		case reflect.Bool:
			v.SetBool(true)
		case reflect.String:
			v.SetString("k")
		default:
			if f.Type != reflect.TypeFor[time.Time]() {
				t.Fatalf("Command.%s: a kind this test cannot set (%s)", f.Name, f.Type)
			}
			v.Set(reflect.ValueOf(time.Unix(1, 0)))
		}
		if _, ok := appendUsageJSON(nil, c); ok {
			t.Errorf("a usage command with %s set was written by hand", f.Name)
		}
	}
	if _, ok := appendUsageJSON(nil, &Command{Op: OpUsage}); ok {
		t.Fatal("an empty usage command was written by hand (encoding/json omits the list)")
	}
}

// decodeUsageJSON reads what appendUsageJSON writes; on any other bytes it
// either refuses (encoding/json decides) or reads exactly what
// encoding/json reads.
func TestDecodeUsageJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		c := randomUsage(r, 1+r.IntN(10), false)
		b, ok := appendUsageJSON(nil, c)
		if !ok {
			t.Fatalf("not written by hand: %+v", c.Usage)
		}
		got, ok := decodeUsageJSON(b)
		if !ok {
			t.Fatalf("its own form refused:\n%s", b)
		}
		checkAsEncodingJSON(t, b, got)
		// Decoded, the times are the instants written, in the zone written.
		for i, u := range got.Usage {
			if w := c.Usage[i]; u.ID != w.ID || u.Count != w.Count || !u.LastUsedAt.Equal(w.LastUsedAt) {
				t.Fatalf("entry %d decoded as %+v, written %+v", i, u, w)
			}
		}
		// Mutated: refused, or read as encoding/json reads it.
		for range 5 {
			m := mutate(r, b)
			if got, ok := decodeUsageJSON(m); ok {
				checkAsEncodingJSON(t, m, got)
			}
		}
	}
	for _, s := range []string{
		`{"op":"usage","usage":[]}`, // an empty list, which encoding/json reads as empty, not nil
		`{"op":"usage","usage":[{"id":"k","count":01,"last_used_at":"2026-01-02T03:04:05Z"}]}`,
		`{"op":"usage","usage":[{"id":"k","count":1e3,"last_used_at":"2026-01-02T03:04:05Z"}]}`,
		`{"op":"usage","usage":[{"id":"k","count":1,"last_used_at":"2026-01-02T03:04:05Z"} ]}`,
		`{"op":"usage","usage":[{"id":"k\u0041","count":1,"last_used_at":"2026-01-02T03:04:05Z"}]}`,
		`{"op":"usage","usage":[{"id":"k","count":1,"last_used_at":"2026-01-02T03:04:05\u005a"}]}`,
		`{"op":"usage","usage":[{"id":"k","count":1,"last_used_at":"2026-01-02T03:04:05Z"},]}`,
		`{"op":"usage","usage":[{"id":"k","count":1,"last_used_at":"2026-01-02T03:04:05Z","x":1}]}`,
	} {
		if _, ok := decodeUsageJSON([]byte(s)); ok {
			t.Errorf("read by hand: %s", s)
		}
	}
}

// checkAsEncodingJSON: encoding/json reads b as got.
func checkAsEncodingJSON(t *testing.T, b []byte, got *Command) {
	t.Helper()
	var want Command
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("read by hand, refused by encoding/json (%v):\n%s", err, b)
	}
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("read by hand as %+v, by encoding/json as %+v:\n%s", got, &want, b)
	}
}

// mutate changes one byte of b, drops one, or doubles one.
func mutate(r *rand.Rand, b []byte) []byte {
	m := bytes.Clone(b)
	i := r.IntN(len(m))
	switch r.IntN(3) {
	case 0:
		const alphabet = " \",:{}[]0-9aZ\\.T+\x00\x1f\x7f\x80\xff"
		m[i] = alphabet[r.IntN(len(alphabet))]
	case 1:
		m = append(m[:i], m[i+1:]...)
	default:
		m = append(m[:i+1], m[i:]...)
	}
	return m
}

// FuzzDecodeUsageJSON: bytes the hand-written reader accepts are read as
// encoding/json reads them.
func FuzzDecodeUsageJSON(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		b, _ := appendUsageJSON(nil, randomUsage(r, 1+r.IntN(3), false))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, ok := decodeUsageJSON(b); ok {
			checkAsEncodingJSON(t, b, got)
		}
	})
}
