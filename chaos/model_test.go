package chaos

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestModelLinearizable(t *testing.T) {
	ops := []Op{
		{Client: 0, Kind: OpCreate, Key: "k1", Name: "a", Invoke: 0, Return: 10, Result: ResOK},
		{Client: 1, Kind: OpUpdate, Key: "k1", Name: "b", Invoke: 11, Return: 30, Result: ResOK},
		// concurrent with the update: may see either name
		{Client: 2, Kind: OpRead, Key: "k1", Invoke: 12, Return: 20, Result: ResOK, ReadName: "a"},
		{Client: 0, Kind: OpRevoke, Key: "k1", Invoke: 31, Return: 40, Result: ResOK},
		{Client: 1, Kind: OpRotate, Key: "k1", Invoke: 41, Return: 50, Result: ResConflict},
		{Client: 2, Kind: OpRead, Key: "k1", Invoke: 51, Return: 60, Result: ResOK, ReadName: "b", ReadRevoked: true},
		// an unknown delete: may or may not have happened
		{Client: 0, Kind: OpDelete, Key: "k1", Invoke: 61, Return: math.MaxInt64, Result: ResUnknown},
		{Client: 1, Kind: OpRead, Key: "k1", Invoke: 70, Return: 80, Result: ResOK, ReadName: "b", ReadRevoked: true},
		{Client: 2, Kind: OpRead, Key: "k1", Invoke: 90, Return: 100, Result: ResNotFound},
		// another key, independent
		{Client: 3, Kind: OpCreate, Key: "k2", Name: "x", Invoke: 0, Return: 5, Result: ResOK},
		{Client: 3, Kind: OpDelete, Key: "k2", Invoke: 6, Return: 7, Result: ResOK},
		{Client: 3, Kind: OpUpdate, Key: "k2", Name: "y", Invoke: 8, Return: 9, Result: ResNotFound},
		// left out: a failed op and a verify
		{Client: 3, Kind: OpRevoke, Key: "k2", Invoke: 10, Return: 11, Result: ResFail},
		{Client: 3, Kind: OpVerify, Key: "k2", Invoke: 10, Return: 11, Result: ResOK},
	}
	if res, err := CheckLinearizable(ops, 5*time.Second, ""); res != porcupine.Ok || err != nil {
		t.Fatalf("want ok, got %v %v", res, err)
	}
}

func TestModelNotLinearizable(t *testing.T) {
	cases := map[string][]Op{
		"stale read after acknowledged update": {
			{Kind: OpCreate, Key: "k1", Name: "a", Invoke: 0, Return: 10, Result: ResOK},
			{Kind: OpUpdate, Key: "k1", Name: "b", Invoke: 11, Return: 20, Result: ResOK},
			{Client: 1, Kind: OpRead, Key: "k1", Invoke: 21, Return: 30, Result: ResOK, ReadName: "a"},
		},
		"revoked key updated": {
			{Kind: OpCreate, Key: "k1", Name: "a", Invoke: 0, Return: 10, Result: ResOK},
			{Kind: OpRevoke, Key: "k1", Invoke: 11, Return: 20, Result: ResOK},
			{Client: 1, Kind: OpUpdate, Key: "k1", Name: "b", Invoke: 21, Return: 30, Result: ResOK},
		},
		"lost create": {
			{Kind: OpCreate, Key: "k1", Name: "a", Invoke: 0, Return: 10, Result: ResOK},
			{Client: 1, Kind: OpRead, Key: "k1", Invoke: 21, Return: 30, Result: ResNotFound},
		},
		"double revoke": {
			{Kind: OpCreate, Key: "k1", Name: "a", Invoke: 0, Return: 10, Result: ResOK},
			{Kind: OpRevoke, Key: "k1", Invoke: 11, Return: 30, Result: ResOK},
			{Client: 1, Kind: OpRevoke, Key: "k1", Invoke: 12, Return: 31, Result: ResOK},
		},
	}
	for name, ops := range cases {
		viz := filepath.Join(t.TempDir(), "viz.html")
		res, err := CheckLinearizable(ops, 5*time.Second, viz)
		if res != porcupine.Illegal || err != nil {
			t.Errorf("%s: want illegal, got %v %v", name, res, err)
		}
	}
}

// TestClassify: NO_LEADER is a definite failure (keyraft wrote nothing), an
// unknown outcome or any other server error is unknown.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		code int
		body string
		want string
	}{
		{503, `{"error":{"code":"NO_LEADER","message":"retry"}}`, ResFail},
		{503, `{"error":{"code":"OUTCOME_UNKNOWN","message":"check"}}`, ResUnknown},
		{503, `not json`, ResUnknown},
		{500, `{"error":{"code":"INTERNAL"}}`, ResUnknown},
		{409, `{"error":{"code":"CONFLICT"}}`, ResConflict},
		{201, `{}`, ResOK},
	} {
		if got := classify(c.code, []byte(c.body), nil); got != c.want {
			t.Errorf("%d %s: %s, want %s", c.code, c.body, got, c.want)
		}
	}
}
