// Package chaos is keyraft's fault-injection harness: real keyraft processes
// in network namespaces, concurrent clients recording a history, a nemesis
// injecting faults, and checkers run on the history after healing.
package chaos

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kinds of admin operations checked for linearizability.
const (
	OpCreate = "create"
	OpUpdate = "update"
	OpRotate = "rotate"
	OpRevoke = "revoke"
	OpDelete = "delete"
	OpRead   = "read"
	OpVerify = "verify" // local, not linearizable: checked by other checkers
	// OpReadAfter is a local read of a key with min_index set to its
	// create's index: read-your-writes on any node (CheckReadYourWrites).
	OpReadAfter = "read-after"
)

// Outcomes of an operation.
const (
	ResOK       = "ok"       // 2xx
	ResNotFound = "notfound" // 404
	ResConflict = "conflict" // 409 (revoked)
	ResUnknown  = "unknown"  // timeout, connection error, 5xx: maybe applied
	ResFail     = "fail"     // definite failure (connection refused before sending, 4xx other)
)

// KeyInput is the input of one operation on one key.
type KeyInput struct {
	Op   string `json:"op"`
	Key  string `json:"key"`
	Name string `json:"name,omitempty"` // create, update
}

// KeyOutput is what the operation answered.
type KeyOutput struct {
	Result  string `json:"result"`
	Name    string `json:"name,omitempty"`    // read
	Revoked bool   `json:"revoked,omitempty"` // read
}

// KeyState is the model's state of one key record.
type KeyState struct {
	Exists  bool
	Revoked bool
	Name    string
}

// step is the sequential specification of one key.
func step(s KeyState, in KeyInput, out KeyOutput) (bool, KeyState) {
	unknown := out.Result == ResUnknown
	switch in.Op {
	case OpCreate:
		// A create is in the history of its key only when it was answered.
		if s.Exists || s.Revoked {
			return false, s
		}
		return out.Result == ResOK || unknown, KeyState{Exists: true, Name: in.Name}
	case OpRead:
		if unknown {
			return true, s
		}
		if !s.Exists {
			return out.Result == ResNotFound, s
		}
		return out.Result == ResOK && out.Name == s.Name && out.Revoked == s.Revoked, s
	case OpUpdate, OpRotate, OpRevoke:
		switch {
		case !s.Exists:
			return out.Result == ResNotFound || unknown, s
		case s.Revoked:
			return out.Result == ResConflict || unknown, s
		}
		n := s
		switch in.Op {
		case OpUpdate:
			n.Name = in.Name
		case OpRevoke:
			n.Revoked = true
		}
		return out.Result == ResOK || unknown, n
	case OpDelete:
		if !s.Exists {
			return out.Result == ResNotFound || unknown, s
		}
		return out.Result == ResOK || unknown, KeyState{}
	}
	return false, s
}

// KeyModel is the porcupine model: a key record, partitioned by key id.
var KeyModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(KeyInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return KeyState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		return step(state.(KeyState), input.(KeyInput), output.(KeyOutput))
	},
	Equal: func(a, b interface{}) bool { return a.(KeyState) == b.(KeyState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(KeyInput), output.(KeyOutput)
		arg := ""
		if in.Name != "" {
			arg = fmt.Sprintf("%q", in.Name)
		}
		res := out.Result
		if in.Op == OpRead && out.Result == ResOK {
			res = fmt.Sprintf("{name:%q revoked:%v}", out.Name, out.Revoked)
		}
		return fmt.Sprintf("%s %s(%s) -> %s", in.Key[max(0, len(in.Key)-6):], in.Op, arg, res)
	},
	DescribeState: func(state interface{}) string {
		s := state.(KeyState)
		if !s.Exists {
			return "absent"
		}
		return fmt.Sprintf("{name:%q revoked:%v}", s.Name, s.Revoked)
	},
}
