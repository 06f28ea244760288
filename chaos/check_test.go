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

// TestCheckReadYourWrites: a read with the create's index as min_index
// that does not find the key is an anomaly, unless a delete that may have
// applied began before it returned; a 503 (not caught up) is not.
func TestCheckReadYourWrites(t *testing.T) {
	read := func(key string, result string, invoke, ret int64) Op {
		return Op{Kind: OpReadAfter, Key: key, Node: "n2", Index: 7, Result: result, Invoke: invoke, Return: ret}
	}
	for _, c := range []struct {
		name      string
		ops       []Op
		anomalies int
	}{
		{"found", []Op{read("k", ResOK, 10, 20)}, 0},
		{"not found", []Op{read("k", ResNotFound, 10, 20)}, 1},
		{"not caught up", []Op{read("k", ResFail, 10, 20)}, 0},
		{"deleted before", []Op{{Kind: OpDelete, Key: "k", Result: ResOK, Invoke: 5, Return: 8}, read("k", ResNotFound, 10, 20)}, 0},
		{"maybe deleted, concurrently", []Op{{Kind: OpDelete, Key: "k", Result: ResUnknown, Invoke: 15, Return: 1 << 62}, read("k", ResNotFound, 10, 20)}, 0},
		{"delete refused", []Op{{Kind: OpDelete, Key: "k", Result: ResFail, Invoke: 5, Return: 8}, read("k", ResNotFound, 10, 20)}, 1},
		{"deleted after", []Op{{Kind: OpDelete, Key: "k", Result: ResOK, Invoke: 25, Return: 30}, read("k", ResNotFound, 10, 20)}, 1},
		{"another key deleted", []Op{{Kind: OpDelete, Key: "j", Result: ResOK, Invoke: 5, Return: 8}, read("k", ResNotFound, 10, 20)}, 1},
	} {
		if _, got := CheckReadYourWrites(c.ops); len(got) != c.anomalies {
			t.Errorf("%s: %d anomalies %v, want %d", c.name, len(got), got, c.anomalies)
		}
	}
}
