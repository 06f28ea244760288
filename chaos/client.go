package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// keyInfo is what the clients know about a key they created.
type keyInfo struct {
	ID     string
	Index  uint64   // the Raft index its create answered with
	Tokens []string // every token it ever had, newest last
	Gone   bool     // acknowledged deleted: no more admin ops on it
	Dead   bool     // a revoke or delete was acknowledged: verifies should start failing
}

// Workload drives concurrent clients against random nodes.
type Workload struct {
	C       *Cluster
	H       *History
	Clients int
	MaxKeys int
	mu      sync.Mutex
	keys    []*keyInfo
	seq     int
}

func (w *Workload) randomNode(r *rand.Rand) *Node {
	m := w.C.Members()
	return m[r.Intn(len(m))]
}

func (w *Workload) pickKey(r *rand.Rand, live bool) *keyInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	var c []*keyInfo
	for _, k := range w.keys {
		if !live || !k.Gone {
			c = append(c, k)
		}
	}
	if len(c) == 0 {
		return nil
	}
	// Favour recent keys so that each key sees a few concurrent ops.
	lo := max(0, len(c)-w.MaxKeys)
	return c[lo+r.Intn(len(c)-lo)]
}

// pickDead picks one of the last keys whose revoke or delete was
// acknowledged, to exercise the revocation bound.
func (w *Workload) pickDead(r *rand.Rand) *keyInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	var c []*keyInfo
	for i := len(w.keys) - 1; i >= 0 && len(c) < 8; i-- {
		if w.keys[i].Dead {
			c = append(c, w.keys[i])
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[r.Intn(len(c))]
}

// Run runs the clients until ctx is done.
func (w *Workload) Run(ctx context.Context, seed int64) {
	var wg sync.WaitGroup
	for i := 0; i < w.Clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed + int64(id)*7919))
			hc := newHTTPClient(2 * time.Second)
			for ctx.Err() == nil {
				w.one(r, hc, id)
				time.Sleep(time.Duration(5+r.Intn(20)) * time.Millisecond)
			}
		}(i)
	}
	wg.Wait()
}

// classify maps an HTTP answer (status and body) to an outcome.
func classify(code int, body []byte, err error) string {
	switch {
	case err != nil:
		if errors.Is(err, syscall.ECONNREFUSED) {
			return ResFail // nothing was sent
		}
		return ResUnknown
	case code >= 200 && code < 300:
		return ResOK
	case code == 404:
		return ResNotFound
	case code == 409:
		return ResConflict
	case code == 503 && errorCode(body) == "NO_LEADER":
		// keyraft promises nothing was written (OUTCOME_UNKNOWN is the
		// answer when it cannot tell): checked by treating it as a failure,
		// which a write that did apply would contradict in the history.
		return ResFail
	case code >= 500:
		return ResUnknown // OUTCOME_UNKNOWN, or any other server error
	}
	return ResFail
}

// errorCode is the code of an error answer, "" if there is none.
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	return e.Error.Code
}

func (w *Workload) one(r *rand.Rand, hc *http.Client, client int) {
	n := w.randomNode(r)
	x := r.Intn(100)
	k := w.pickKey(r, true)
	if k == nil || x < 15 {
		w.create(hc, n, client)
		return
	}
	switch {
	case x < 20:
		w.readAfter(hc, n, client, k)
	case x < 45:
		v := w.pickKey(r, false)
		if r.Intn(2) == 0 {
			v = w.pickDead(r)
		}
		w.verify(hc, n, client, v, r)
	case x < 60:
		w.read(hc, n, client, k)
	case x < 72:
		w.write(hc, n, client, k, OpUpdate, fmt.Sprintf("name-%d", r.Intn(1000)))
	case x < 80:
		w.write(hc, n, client, k, OpRotate, "")
	case x < 90:
		w.write(hc, n, client, k, OpRevoke, "")
	default:
		w.write(hc, n, client, k, OpDelete, "")
	}
}

func (w *Workload) create(hc *http.Client, n *Node, client int) {
	w.mu.Lock()
	w.seq++
	name := fmt.Sprintf("key-%d", w.seq)
	w.mu.Unlock()
	op := Op{Client: client, Kind: OpCreate, Node: n.Name, Name: name, Invoke: w.H.Now()}
	code, b, err := w.C.Call(hc, n, "POST", "/v1/keys", map[string]any{"name": name, "workspace_id": "chaos"})
	op.Return, op.Status, op.Result = w.H.Now(), code, classify(code, b, err)
	if err != nil {
		op.Err = err.Error()
	}
	if op.Result == ResOK {
		var env struct {
			Data struct {
				ID  string `json:"id"`
				Key string `json:"key"`
			} `json:"data"`
			Meta struct {
				Index uint64 `json:"index"`
			} `json:"meta"`
		}
		if json.Unmarshal(b, &env) == nil && env.Data.ID != "" {
			op.Key, op.Token, op.Index = env.Data.ID, env.Data.Key, env.Meta.Index
			w.mu.Lock()
			w.keys = append(w.keys, &keyInfo{ID: op.Key, Index: op.Index, Tokens: []string{op.Token}})
			w.mu.Unlock()
		} else {
			op.Result, op.Err = ResFail, "unreadable answer: "+string(b)
		}
	}
	w.H.Add(op)
}

func (w *Workload) write(hc *http.Client, n *Node, client int, k *keyInfo, kind, name string) {
	op := Op{Client: client, Kind: kind, Key: k.ID, Node: n.Name, Name: name, Invoke: w.H.Now()}
	var code int
	var b []byte
	var err error
	switch kind {
	case OpUpdate:
		code, b, err = w.C.Call(hc, n, "PATCH", "/v1/keys/"+k.ID, map[string]any{"name": name})
	case OpRotate:
		code, b, err = w.C.Call(hc, n, "POST", "/v1/keys/"+k.ID+"/rotate", map[string]any{})
	case OpRevoke:
		code, b, err = w.C.Call(hc, n, "POST", "/v1/keys/"+k.ID+"/revoke", nil)
	case OpDelete:
		code, b, err = w.C.Call(hc, n, "DELETE", "/v1/keys/"+k.ID, nil)
	}
	op.Return, op.Status, op.Result = w.H.Now(), code, classify(code, b, err)
	if err != nil {
		op.Err = err.Error()
	} else if op.Result != ResOK {
		op.Err = truncate(string(b), 200)
	}
	if op.Result == ResOK && kind == OpRotate {
		var env struct {
			Data struct {
				Key string `json:"key"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &env) == nil && env.Data.Key != "" {
			op.Token = env.Data.Key
			w.mu.Lock()
			k.Tokens = append(k.Tokens, op.Token)
			w.mu.Unlock()
		}
	}
	if op.Result == ResOK && (kind == OpDelete || kind == OpRevoke) {
		w.mu.Lock()
		k.Dead = true
		w.mu.Unlock()
	}
	if op.Result == ResOK && kind == OpDelete {
		w.mu.Lock()
		k.Gone = true
		w.mu.Unlock()
	}
	w.H.Add(op)
}

// RecordView is the part of a key record the checks read.
type RecordView struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	RevokedAt *string `json:"revoked_at"`
}

func (w *Workload) read(hc *http.Client, n *Node, client int, k *keyInfo) {
	op := Op{Client: client, Kind: OpRead, Key: k.ID, Node: n.Name, Invoke: w.H.Now()}
	code, b, err := w.C.Call(hc, n, "GET", "/v1/keys/"+k.ID+"?consistent=true", nil)
	op.Return, op.Status, op.Result = w.H.Now(), code, classify(code, b, err)
	if err != nil {
		op.Err = err.Error()
	}
	if op.Result == ResOK {
		var env struct {
			Data RecordView `json:"data"`
		}
		if json.Unmarshal(b, &env) != nil || env.Data.ID != k.ID {
			op.Result, op.Err = ResFail, "unreadable answer: "+truncate(string(b), 200)
		}
		op.ReadName, op.ReadRevoked = env.Data.Name, env.Data.RevokedAt != nil
	} else if op.Result == ResConflict {
		op.Result = ResFail
	}
	w.H.Add(op)
}

// readAfter reads key k on node n, which need not lead, with min_index at
// its create's index: the node must answer with it (or 503 when it cannot
// catch up within the second the API waits), unless it was deleted since.
func (w *Workload) readAfter(hc *http.Client, n *Node, client int, k *keyInfo) {
	op := Op{Client: client, Kind: OpReadAfter, Key: k.ID, Node: n.Name, Index: k.Index, Invoke: w.H.Now()}
	code, b, err := w.C.Call(hc, n, "GET", fmt.Sprintf("/v1/keys/%s?min_index=%d", k.ID, k.Index), nil)
	op.Return = w.H.Now()
	op.localAnswer(code, b, err)
	w.H.Add(op)
}

// localAnswer records the answer to an operation one node serves alone
// (no model checks it): unknown without an answer, ok on 200, notfound on
// 404, a failure otherwise.
func (op *Op) localAnswer(code int, body []byte, err error) {
	op.Status = code
	switch {
	case err != nil:
		op.Result, op.Err = ResUnknown, err.Error()
	case code == 200:
		op.Result = ResOK
	case code == 404:
		op.Result = ResNotFound
	default:
		op.Result, op.Err = ResFail, truncate(string(body), 200)
	}
}

func (w *Workload) verify(hc *http.Client, n *Node, client int, k *keyInfo, r *rand.Rand) {
	if k == nil {
		return
	}
	w.mu.Lock()
	tok := k.Tokens[len(k.Tokens)-1]
	if r.Intn(4) == 0 {
		tok = k.Tokens[r.Intn(len(k.Tokens))]
	}
	w.mu.Unlock()
	op := Op{Client: client, Kind: OpVerify, Key: k.ID, Node: n.Name, Token: tok, Invoke: w.H.Now()}
	code, err := Verify(hc, n, tok)
	op.Return = w.H.Now()
	op.localAnswer(code, nil, err) // verify answers 401, never 404, for an unknown key
	w.H.Add(op)
}

// Verify posts a token to /v1/verify on a node.
func Verify(hc *http.Client, n *Node, token string) (int, error) {
	b, _ := json.Marshal(map[string]string{"key": token})
	resp, err := hc.Post(n.HTTP()+"/v1/verify", "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
