package chaos

import (
	"strings"
	"testing"
)

// TestCheckTokens: of a live key's known tokens, exactly one verifies, and
// never one that an acknowledged rotate replaced for certain (a lost
// rotate); a rotate of unknown outcome may have put a token in force that
// the history never saw.
func TestCheckTokens(t *testing.T) {
	ops := []Op{
		{Kind: OpCreate, Key: "k", Token: "tok-create", Invoke: 0, Return: 10, Result: ResOK},
		{Kind: OpRotate, Key: "k", Token: "tok-rotated", Invoke: 20, Return: 30, Result: ResOK},
	}
	f := fates(ops)[0]
	for _, c := range []struct {
		name      string
		verified  []int
		unknown   bool
		wantIssue string
	}{
		{"the rotated token", []int{1}, false, ""},
		{"the replaced token: a lost rotate", []int{0}, false, "rotate is lost"},
		{"both", []int{0, 1}, false, "2 of its tokens verify"},
		{"none", nil, false, "none of its 2"},
		{"none, a rotate of unknown outcome", nil, true, ""},
		{"the replaced token, a rotate of unknown outcome", []int{0}, true, "rotate is lost"},
	} {
		f.unknownRotate = c.unknown
		var verified []string
		for _, i := range c.verified {
			verified = append(verified, f.tokens[i])
		}
		issues := checkTokens(f, "n1", verified, c.verified)
		switch {
		case c.wantIssue == "" && len(issues) > 0:
			t.Errorf("%s: %v", c.name, issues)
		case c.wantIssue != "" && (len(issues) != 1 || !strings.Contains(issues[0], c.wantIssue)):
			t.Errorf("%s: %v, want one saying %q", c.name, issues, c.wantIssue)
		}
	}
	// Rotates that overlap replace neither for certain: either may be in force.
	overlapping := append(ops[:1:1],
		Op{Kind: OpRotate, Key: "k", Token: "tok-a", Invoke: 20, Return: 40, Result: ResOK},
		Op{Kind: OpRotate, Key: "k", Token: "tok-b", Invoke: 30, Return: 50, Result: ResOK})
	g := fates(overlapping)[0]
	for _, i := range []int{1, 2} {
		if issues := checkTokens(g, "n1", []string{g.tokens[i]}, []int{i}); len(issues) > 0 {
			t.Errorf("overlapping rotates, token %d: %v", i, issues)
		}
	}
}
