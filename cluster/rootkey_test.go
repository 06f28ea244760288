package cluster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/keyraft/keyraft/fsm"
	"github.com/keyraft/keyraft/keyindex"
)

// TestCreateRootKeyAnnounces: a generated root key's token is announced
// when the key is created and when its creation may or may not have
// committed (a later leader may commit it, and then no other root key is
// made), and not when it surely failed; an operator's own token
// (--root-key-file) is never printed.
func TestCreateRootKeyAnnounces(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rootToken string
		res       *fsm.Result
		err       error
		announced bool
	}{
		{name: "created", res: &fsm.Result{}, announced: true},
		{name: "outcome unknown", err: fmt.Errorf("apply: %w", ErrOutcomeUnknown), announced: true},
		{name: "not leader", err: ErrNotLeader},
		{name: "refused", res: &fsm.Result{Err: errors.New("already initialized")}},
		{name: "operator's token", rootToken: operatorRootToken(t), res: &fsm.Result{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var announced []string
			h := Housekeeping{RootToken: tc.rootToken, AnnounceRootKey: func(p string) { announced = append(announced, p) }}
			var cmd *fsm.Command
			apply := func(c *fsm.Command) (*fsm.Result, uint64, error) {
				cmd = c
				return tc.res, 7, tc.err
			}
			err := createRootKey(h, apply, hclog.NewNullLogger())
			if failed := tc.err != nil || tc.res.Err != nil; (err != nil) != failed || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Fatalf("error %v", err)
			}
			rec := cmd.Record.Record
			if !cmd.Bootstrap || rec.Type != keyindex.TypeAdmin || rec.WorkspaceID != keyindex.RootWorkspace {
				t.Fatalf("command %+v, record %+v", cmd, rec)
			}
			if !tc.announced {
				if len(announced) != 0 {
					t.Fatalf("announced %d tokens", len(announced))
				}
				if tc.rootToken != "" && rec.Hash != keyindex.HashToken([]byte(tc.rootToken)) {
					t.Fatal("the record is not of the operator's token")
				}
				return
			}
			if len(announced) != 1 || keyindex.HashToken([]byte(announced[0])) != rec.Hash {
				t.Fatalf("announced %d tokens; want the one whose hash the record holds", len(announced))
			}
		})
	}
}

func operatorRootToken(t *testing.T) string {
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeAdmin, keyindex.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Plaintext
}
