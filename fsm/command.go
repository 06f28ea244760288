// Package fsm is keyraft's Raft state machine: versioned commands that change
// the key index, their deterministic application, and snapshots of the index.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// Version is the newest encoding version, the first byte of a command.
// Decoders accept every version up to this one, so later releases can replay
// old logs; a command from a newer release stops the node (fsm.apply)
// rather than be misread or skipped. Each command is stamped with the
// lowest version whose builds apply it exactly as this one does
// (Command.version), so that during a rolling upgrade the older nodes go on
// applying every command they can.
// Version 6 added the node_removed op, version 5 the restored op and
// KeepRoot, which an older build would refuse or ignore while newer nodes
// apply them. Version 4 carries records
// in the compact binary layout (keyindex/codec.go)
// with key ids as their ULID's bytes, version 3 in the compact layout with
// key ids written out, version 2 in the older binary layout
// (StoredRecord.MarshalJSON), version 1 field by field; a record of any of
// them decodes. Each bump keeps an older build from failing on a record it
// cannot read inside an otherwise readable command: it refuses the command
// whole, as every node of its version does.
const Version = 6

// Op names a command.
type Op string

const (
	OpCreate         Op = "create"
	OpUpdate         Op = "update"
	OpRotate         Op = "rotate"
	OpRevoke         Op = "revoke"
	OpDelete         Op = "delete"
	OpImport         Op = "import"
	OpUsage          Op = "usage"
	OpPurgeRotations Op = "purge_rotations"
	// OpRestored follows a restore from a backup. It changes no key: its
	// audit entry records who restored the cluster, and its index, the one
	// the restore answers with, is reached only by a node holding the
	// restored state (Raft's user restore leaves a gap in the log before it
	// that only the snapshot fills). Its commit is also what makes the
	// restore durable: until a quorum has the snapshot, a new leader could
	// carry on from the old state.
	OpRestored Op = "restored"
	// OpNodeRemoved records that an operator removed the node with ID from
	// the cluster. Raft's configuration forgets a removed server; this is
	// what keeps it out: no leader, now or after any leadership change,
	// adds that id back, and the node itself stops serving once it applies
	// (or is told of) its removal, after restarts too.
	OpNodeRemoved Op = "node_removed"
)

// Command is one state change. Everything non-deterministic (ids, times,
// token hashes) is decided by the leader before it is proposed: Apply never
// reads the clock or random numbers. Plaintext tokens never appear here.
type Command struct {
	Op Op `json:"op"`
	// Audit describes the admin write; set for every op an admin makes.
	Audit *AuditEntry `json:"audit,omitempty"`

	Record  *StoredRecord   `json:"record,omitempty"`  // create
	Records []*StoredRecord `json:"records,omitempty"` // import
	// Bootstrap marks the create of the first root key: it initializes the cluster.
	Bootstrap bool `json:"bootstrap,omitempty"`

	ID     string    `json:"id,omitempty"` // update, rotate, revoke, delete; node_removed: the node's id
	Time   time.Time `json:"time,omitzero"`
	Update *Update   `json:"update,omitempty"`
	Rotate *Rotate   `json:"rotate,omitempty"`

	Usage []Usage  `json:"usage,omitempty"`
	IDs   []string `json:"ids,omitempty"` // purge_rotations

	// KeepRoot makes a revoke, a delete or an update that disables refuse
	// to take away the last active root key. The API checks that before
	// proposing, but two such writes racing each pass that check; the
	// second is refused here, where writes are ordered. A field rather
	// than a rule of Apply so that logs written before it replay as they
	// applied.
	KeepRoot bool `json:"keep_root,omitempty"`
}

// StoredRecord is a record as commands and snapshots carry it, token hashes
// included (the API never shows them).
type StoredRecord struct{ *keyindex.Record }

// recordV1 is the field-by-field form of version-1 commands and snapshots:
// the API record with its token hashes beside it.
type recordV1 struct {
	*keyindex.Record
	SHA256         keyindex.Hash  `json:"sha256"`
	PreviousSHA256 *keyindex.Hash `json:"previous_sha256,omitempty"`
}

// MarshalJSON writes the record in its binary encoding (keyindex/codec.go),
// as a base64 string: an import of 10,000 keys is about 2.5 MB instead of
// 6.2 MB, and a node replaying it decodes each record without reflection
// (encoding/json decoding of version-1 records dominated catching up on a
// million keys).
func (s *StoredRecord) MarshalJSON() ([]byte, error) {
	if s.Record == nil {
		return nil, errors.New("record missing")
	}
	return json.Marshal(keyindex.AppendRecord(nil, s.Record))
}

// UnmarshalJSON reads the binary form, or the version-1 object.
func (s *StoredRecord) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var raw []byte
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		r, err := keyindex.DecodeRecord(raw)
		if err != nil {
			return err
		}
		s.Record = r
		return nil
	}
	var v1 recordV1
	if err := json.Unmarshal(b, &v1); err != nil {
		return err
	}
	if v1.Record == nil { // {} or only the hashes: nothing to store
		return errors.New("record missing")
	}
	// The hashes travel beside the fields in this form; put them where the
	// binary form decodes them, so both give the same record.
	v1.Record.Hash = v1.SHA256
	switch {
	case v1.Record.Rotation != nil && v1.PreviousSHA256 == nil:
		return errors.New("rotation without previous hash")
	case v1.Record.Rotation == nil && v1.PreviousSHA256 != nil:
		return errors.New("previous hash without rotation")
	case v1.Record.Rotation != nil:
		v1.Record.Rotation.PreviousHash = *v1.PreviousSHA256
	}
	s.Record = v1.Record
	return nil
}

// Store wraps r for encoding.
func Store(r *keyindex.Record) *StoredRecord { return &StoredRecord{Record: r} }

// record unwraps a decoded StoredRecord (UnmarshalJSON has put its hashes
// in place).
func (s *StoredRecord) record() (*keyindex.Record, error) {
	if s == nil || s.Record == nil || s.ID == "" {
		return nil, errors.New("record missing")
	}
	return s.Record, nil
}

// Update changes the fields that PATCH may change; nil means unchanged.
type Update struct {
	Name             *string            `json:"name,omitempty"`
	Scopes           *[]string          `json:"scopes,omitempty"`
	AllowedOrigins   *[]string          `json:"allowed_origins,omitempty"`
	AllowedResources *[]string          `json:"allowed_resources,omitempty"`
	RateLimitPerMin  *int               `json:"rate_limit_per_min,omitempty"`
	Metadata         *map[string]string `json:"metadata,omitempty"`
	Active           *bool              `json:"active,omitempty"`
	// ExpiresAt: set to change; ClearExpiry to remove the expiry.
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	ClearExpiry bool       `json:"clear_expiry,omitempty"`
}

// Rotate gives a key a new token. With a grace period the old token stays
// valid until PreviousExpiresAt.
type Rotate struct {
	SHA256            keyindex.Hash `json:"sha256"`
	KeyPrefix         string        `json:"key_prefix"`
	KeySuffix         string        `json:"key_suffix"`
	Preview           string        `json:"preview"`
	PreviousExpiresAt *time.Time    `json:"previous_expires_at,omitempty"`
}

// Usage is one node's verifications of one key since its last flush.
type Usage struct {
	ID         string    `json:"id"`
	Count      int64     `json:"count"`
	LastUsedAt time.Time `json:"last_used_at"`
}

// ErrNewerCommand: a command written by a newer build than this one.
var ErrNewerCommand = errors.New("command from a newer keyraft")

// Encode serializes c with its version byte in front.
func Encode(c *Command) ([]byte, error) {
	if b, ok := appendUsageJSON([]byte{c.version()}, c); ok {
		return b, nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte{c.version()}, b...), nil
}

// version is the lowest command version whose builds apply c exactly as
// this build does. Whoever adds an op, adds a field to a command, or
// changes how Apply treats one, raises Version and returns it here for the
// commands concerned: an older build must stop at them, not apply them
// otherwise.
func (c *Command) version() byte {
	switch {
	case c.Op == OpNodeRemoved:
		return 6
	case c.Op == OpRestored || c.KeepRoot:
		return 5 // an older build would ignore KeepRoot
	}
	return 4 // records with key ids as ULID bytes (Store writes no other)
}

// Decode parses a command written by Encode of this or an older version.
func Decode(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, errors.New("empty command")
	}
	if b[0] > Version {
		return nil, fmt.Errorf("%w: version %d (this build reads up to %d)", ErrNewerCommand, b[0], Version)
	}
	if b[0] == 0 {
		return nil, errors.New("command version 0 does not exist")
	}
	if c, ok := decodeUsageJSON(b[1:]); ok {
		return c, nil
	}
	var c Command
	if err := json.Unmarshal(b[1:], &c); err != nil {
		return nil, fmt.Errorf("decoding command: %w", err)
	}
	return &c, nil
}
