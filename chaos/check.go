package chaos

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"time"
)

// Converge polls every member's /v1/internal/state until all report the
// same applied index and digest, or the limit passes.
func Converge(c *Cluster, limit time.Duration) (map[string]*LocalState, []string) {
	deadline := time.Now().Add(limit)
	var last map[string]*LocalState
	var problems []string
	for {
		last, problems = map[string]*LocalState{}, nil
		for _, n := range c.Members() {
			st, err := c.State(n)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.Name, err))
				continue
			}
			last[n.Name] = st
		}
		if len(problems) == 0 {
			var ref *LocalState
			same := true
			for _, st := range last {
				if ref == nil {
					ref = st
				} else if st.AppliedIndex != ref.AppliedIndex || st.Digest != ref.Digest {
					same = false
				}
			}
			if same {
				return last, nil
			}
		}
		if time.Now().After(deadline) {
			var names []string
			for name := range last {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				problems = append(problems, fmt.Sprintf("%s: applied_index %d digest %s", name, last[name].AppliedIndex, last[name].Digest))
			}
			return last, append([]string{fmt.Sprintf("convergence: nodes differ after %v", limit)}, problems...)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// GossipHealed waits until every member sees every other member alive in
// gossip. A partition longer than memberlist's GossipToTheDeadTime leaves
// two rings that only keyraft's reconnect merges again; left split, the
// leader would reap healthy nodes after --reap-after.
func GossipHealed(c *Cluster, limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	for {
		var problems []string
		for _, n := range c.Members() {
			st, err := c.Status(n)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.Name, err))
				continue
			}
			for _, m := range c.Members() {
				if g := gossipStateOf(st, m.ID()); g != "alive" {
					problems = append(problems, fmt.Sprintf("%s sees %s as %q in gossip", n.Name, m.Name, g))
				}
			}
		}
		if len(problems) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return append([]string{fmt.Sprintf("gossip: members still apart %v after healing", limit)}, problems...)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func gossipStateOf(st *Status, id string) string {
	for _, x := range st.Nodes {
		if x.ID == id {
			return x.Gossip
		}
	}
	return "absent"
}

// keyFate summarises what the history says must hold for one key.
type keyFate struct {
	id      string
	created bool
	// tokens: the create's token, then those of acknowledged rotates, each
	// with the operation that made it.
	tokens        []string
	tokenOps      []Op
	unknownRotate bool
	ackedDelete   bool
	ackedRevoke   bool
	maybeDeleted  bool // a delete of unknown outcome
	maybeRevoked  bool // a revoke of unknown outcome
	ackName       string
}

// superseded reports whether token i was replaced for certain: an
// acknowledged rotate began after the operation that made it had returned.
// (Rotates send no grace period, so a replaced token stops at once.)
func (f *keyFate) superseded(i int) bool {
	for _, r := range f.tokenOps {
		if r.Kind == OpRotate && r.Invoke > f.tokenOps[i].Return {
			return true
		}
	}
	return false
}

func fates(ops []Op) []*keyFate {
	m := map[string]*keyFate{}
	var order []string
	get := func(id string) *keyFate {
		f := m[id]
		if f == nil {
			f = &keyFate{id: id}
			m[id] = f
			order = append(order, id)
		}
		return f
	}
	for _, op := range ops {
		if op.Key == "" {
			continue
		}
		f := get(op.Key)
		switch {
		case op.Kind == OpCreate && op.Result == ResOK:
			f.created = true
			f.tokens = append([]string{op.Token}, f.tokens...)
			f.tokenOps = append([]Op{op}, f.tokenOps...)
		case op.Kind == OpRotate && op.Result == ResOK:
			f.tokens = append(f.tokens, op.Token)
			f.tokenOps = append(f.tokenOps, op)
		case op.Kind == OpRotate && op.Result == ResUnknown:
			f.unknownRotate = true
		case op.Kind == OpDelete && op.Result == ResOK:
			f.ackedDelete = true
		case op.Kind == OpRevoke && op.Result == ResOK:
			f.ackedRevoke = true
		case op.Kind == OpDelete && op.Result == ResUnknown:
			f.maybeDeleted = true
		case op.Kind == OpRevoke && op.Result == ResUnknown:
			f.maybeRevoked = true
		}
	}
	out := make([]*keyFate, 0, len(order))
	for _, id := range order {
		if m[id].created {
			out = append(out, m[id])
		}
	}
	return out
}

// CheckDurable checks, on every member, that every acknowledged create is
// present and verifies (unless acknowledged deleted or revoked, or maybe so),
// and that every acknowledged revoke/delete is in force. It returns the
// number of (key, node) pairs checked and the anomalies.
func CheckDurable(c *Cluster, ops []Op) (int, []string) {
	var anomalies []string
	checked := 0
	hc := newHTTPClient(3 * time.Second)
	for _, f := range fates(ops) {
		for _, n := range c.Members() {
			checked++
			code, b, err := c.Call(hc, n, "GET", "/v1/keys/"+f.id, nil)
			if err != nil {
				anomalies = append(anomalies, fmt.Sprintf("durable: %s on %s: read failed: %v", f.id, n.Name, err))
				continue
			}
			var env struct {
				Data RecordView `json:"data"`
			}
			json.Unmarshal(b, &env)
			var verified []string
			var verifiedAt []int // indexes in f.tokens
			for i, t := range f.tokens {
				vc, err := Verify(hc, n, t)
				if err != nil {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s on %s: verify failed: %v", f.id, n.Name, err))
				}
				if vc == 200 {
					verified = append(verified, t[:min(len(t), 16)]+"…")
					verifiedAt = append(verifiedAt, i)
				}
			}
			switch {
			case f.ackedDelete:
				if code != 404 {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged deleted but GET on %s answers %d", f.id, n.Name, code))
				}
				if len(verified) > 0 {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged deleted but tokens %v verify on %s", f.id, verified, n.Name))
				}
			case f.ackedRevoke:
				if code == 200 && env.Data.RevokedAt == nil {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged revoked but not revoked on %s", f.id, n.Name))
				}
				if code != 200 && !f.maybeDeleted {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged revoked, never deleted, but GET on %s answers %d", f.id, n.Name, code))
				}
				if len(verified) > 0 {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged revoked but tokens %v verify on %s", f.id, verified, n.Name))
				}
			case f.maybeDeleted:
				// Unknown outcome: either state is fine; convergence checks agreement.
			case f.maybeRevoked:
				// Revoked or not, a revoke never removes the record.
				if code != 200 {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged created, never deleted, but GET on %s answers %d", f.id, n.Name, code))
				}
			default:
				if code != 200 || env.Data.RevokedAt != nil {
					anomalies = append(anomalies, fmt.Sprintf("durable: %s acknowledged created, never revoked or deleted, but GET on %s answers %d revoked=%v", f.id, n.Name, code, env.Data.RevokedAt != nil))
				}
				anomalies = append(anomalies, checkTokens(f, n.Name, verified, verifiedAt)...)
			}
		}
	}
	return checked, anomalies
}

// CheckReadYourWrites: a read with min_index at a key's create index finds
// the key on whatever node answers it (a 503, not caught up in time, is
// allowed), unless a delete of it, acknowledged or of unknown outcome, was
// invoked before the read returned. It returns the number of reads checked
// and the anomalies.
func CheckReadYourWrites(ops []Op) (int, []string) {
	deletes := map[string][]Op{}
	for _, op := range ops {
		if op.Kind == OpDelete && (op.Result == ResOK || op.Result == ResUnknown) {
			deletes[op.Key] = append(deletes[op.Key], op)
		}
	}
	var anomalies []string
	checked := 0
	for _, op := range ops {
		if op.Kind != OpReadAfter || (op.Result != ResOK && op.Result != ResNotFound) {
			continue
		}
		checked++
		if op.Result == ResOK || slices.ContainsFunc(deletes[op.Key], func(d Op) bool { return d.Invoke < op.Return }) {
			continue
		}
		anomalies = append(anomalies, fmt.Sprintf(
			"read-your-writes: %s, created at index %d, not found on %s by a read with that min_index (%s–%s), and no delete of it before",
			op.Key, op.Index, op.Node, ts(op.Invoke), ts(op.Return)))
	}
	return checked, anomalies
}

// checkTokens checks which of a live key's known tokens verify on a node:
// one at most (rotates keep no grace period), exactly one unless a rotate
// of unknown outcome may have put its own in force, and never one an
// acknowledged rotate replaced for certain (that rotate would be lost).
func checkTokens(f *keyFate, node string, verified []string, at []int) []string {
	switch {
	case len(verified) > 1:
		return []string{fmt.Sprintf("durable: %s: %d of its tokens verify on %s: %v", f.id, len(verified), node, verified)}
	case len(verified) == 0 && !f.unknownRotate:
		return []string{fmt.Sprintf("durable: %s: none of its %d acknowledged tokens verifies on %s", f.id, len(f.tokens), node)}
	case len(verified) == 1 && f.superseded(at[0]):
		return []string{fmt.Sprintf("durable: %s: token %s verifies on %s, though an acknowledged rotate began after it was made: that rotate is lost", f.id, verified[0], node)}
	}
	return nil
}

// CheckRevocationBound: no verify invoked later than bound after a revoke
// (or delete) of its key was acknowledged answers 200, on any node.
func CheckRevocationBound(ops []Op, bound time.Duration) (int, []string) {
	gone := map[string]Op{} // key -> earliest acknowledged revoke/delete (by return time)
	for _, op := range ops {
		if (op.Kind == OpRevoke || op.Kind == OpDelete) && op.Result == ResOK {
			if prev, ok := gone[op.Key]; !ok || op.Return < prev.Return {
				gone[op.Key] = op
			}
		}
	}
	var anomalies []string
	checked := 0
	for _, op := range ops {
		if op.Kind != OpVerify {
			continue
		}
		r, ok := gone[op.Key]
		if !ok || op.Invoke <= r.Return+int64(bound) {
			continue
		}
		checked++
		if op.Result == ResOK {
			anomalies = append(anomalies, fmt.Sprintf(
				"revocation bound: key %s %s acknowledged at %s (via %s); verify on %s invoked at %s (+%v) answered 200",
				op.Key, r.Kind, ts(r.Return), r.Node, op.Node, ts(op.Invoke), time.Duration(op.Invoke-r.Return)))
		}
	}
	return checked, anomalies
}

func ts(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }

// tokenShape matches anything that looks like a keyraft token.
var tokenShape = regexp.MustCompile(`(?:[a-z0-9]{1,12}_)?(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{36}`)

// CheckPlaintextAtRest scans every node's data dir (Raft log, snapshots)
// and log for the plaintext of any token the run handed out, the root key
// included. Only a node's stdout may hold the root key line, by design. It
// returns the number of files scanned and the anomalies.
func CheckPlaintextAtRest(c *Cluster, ops []Op) (int, []string) {
	known := map[string]bool{c.Root: true}
	for _, op := range ops {
		if op.Token != "" {
			known[op.Token] = true
		}
	}
	var files int
	var anomalies []string
	for _, n := range c.Members() {
		paths := []string{filepath.Join(n.Dir, "stderr.log")}
		filepath.WalkDir(n.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				paths = append(paths, p)
			}
			return nil
		})
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			files++
			for _, m := range tokenShape.FindAll(b, -1) {
				if known[string(m)] {
					anomalies = append(anomalies, fmt.Sprintf("plaintext token %s…%s in %s", m[:12], m[len(m)-4:], p))
					break
				}
			}
		}
	}
	return files, anomalies
}
