package chaos

import (
	"encoding/json"
	"math"
	"os"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op is one recorded client operation. Times are nanoseconds on the
// harness's monotonic clock since the start of the run.
type Op struct {
	Client int    `json:"client"`
	Kind   string `json:"kind"`
	Key    string `json:"key,omitempty"`
	Node   string `json:"node"` // node name the request went to (n1…)
	Name   string `json:"name,omitempty"`
	Token  string `json:"token,omitempty"` // verify: the token; create/rotate: the new token
	Invoke int64  `json:"invoke_ns"`
	Return int64  `json:"return_ns"` // math.MaxInt64 when the outcome is unknown
	Result string `json:"result"`
	Status int    `json:"status,omitempty"`
	Err    string `json:"error,omitempty"`
	// read results
	ReadName    string `json:"read_name,omitempty"`
	ReadRevoked bool   `json:"read_revoked,omitempty"`
	Index       uint64 `json:"index,omitempty"`
}

// History is the shared, append-only record of a run.
type History struct {
	mu     sync.Mutex
	start  time.Time
	ops    []Op
	Events []Event `json:"events"`
}

// Event is a nemesis action, for the report and the timeline.
type Event struct {
	At   int64  `json:"at_ns"`
	What string `json:"what"`
}

func NewHistory() *History { return &History{start: time.Now()} }

// Now is the monotonic time since the start of the run.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

func (h *History) Event(what string) {
	h.mu.Lock()
	h.Events = append(h.Events, Event{At: h.Now(), What: what})
	h.mu.Unlock()
}

func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

func (h *History) Save(path string) error {
	h.mu.Lock()
	b, err := json.MarshalIndent(map[string]any{"ops": h.ops, "events": h.Events}, "", " ")
	h.mu.Unlock()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Porcupine turns the admin operations of a history into porcupine
// operations: creates that were not answered (no id known) and definite
// failures are left out; unknown outcomes return at infinity.
func Porcupine(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		switch op.Kind {
		case OpCreate, OpUpdate, OpRotate, OpRevoke, OpDelete, OpRead:
		default:
			continue
		}
		if op.Key == "" || op.Result == ResFail {
			continue
		}
		ret := op.Return
		if op.Result == ResUnknown {
			ret = math.MaxInt64
		}
		out = append(out, porcupine.Operation{
			ClientId: op.Client,
			Input:    KeyInput{Op: op.Kind, Key: op.Key, Name: op.Name},
			Call:     op.Invoke,
			Output:   KeyOutput{Result: op.Result, Name: op.ReadName, Revoked: op.ReadRevoked},
			Return:   ret,
			Metadata: op.Node,
		})
	}
	return out
}

// CheckLinearizable runs porcupine; it writes the visualisation to vizPath
// when the history is not linearizable (or always, when vizPath is set and
// always is true).
func CheckLinearizable(ops []Op, timeout time.Duration, vizPath string) (porcupine.CheckResult, error) {
	res, info := porcupine.CheckOperationsVerbose(KeyModel, Porcupine(ops), timeout)
	if res != porcupine.Ok && vizPath != "" {
		return res, porcupine.VisualizePath(KeyModel, info, vizPath)
	}
	return res, nil
}
