package api

import (
	"slices"
	"testing"
)

// TestDetailsOrderIndexesByValue: an import's details name items by index,
// and a reader looks for keys[2] before keys[10].
func TestDetailsOrderIndexesByValue(t *testing.T) {
	var c checker
	for _, f := range []string{"keys[10].name", "keys[2].scopes", "name", "keys[2].name", "keys[1]", "keys[100].type", "keys", "key[3]"} {
		c.add(f, "bad")
	}
	var got []string
	for _, d := range c.details() {
		got = append(got, d.Field)
	}
	want := []string{"key[3]", "keys", "keys[1]", "keys[2].name", "keys[2].scopes", "keys[10].name", "keys[100].type", "name"}
	if !slices.Equal(got, want) {
		t.Fatalf("details in order %q, want %q", got, want)
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"a9", "a10", -1}, {"a10", "a9", 1}, {"a010", "a10", 0}, {"a1b", "a1", 1}, {"x", "x", 0}, {"a1", "ab", -1},
	} {
		if got := compareFields(tc.a, tc.b); got != tc.want {
			t.Errorf("compareFields(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
