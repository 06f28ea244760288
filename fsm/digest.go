package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math/bits"

	"github.com/keyraft/keyraft/keyindex"
)

// setHash is an incremental hash of a multiset (AdHash): the sum, mod
// 2^256, of the SHA-256 of each element. Adding or removing one element
// costs one hash, so the FSM keeps a digest of its whole state current on
// every Apply and GET /v1/cluster answers without scanning millions of keys.
type setHash [4]uint64

func (s *setHash) add(h [32]byte) {
	var carry uint64
	for i := 3; i >= 0; i-- {
		s[i], carry = bits.Add64(s[i], binary.BigEndian.Uint64(h[i*8:]), carry)
	}
}

func (s *setHash) sub(h [32]byte) {
	var borrow uint64
	for i := 3; i >= 0; i-- {
		s[i], borrow = bits.Sub64(s[i], binary.BigEndian.Uint64(h[i*8:]), borrow)
	}
}

func (s *setHash) bytes() []byte {
	out := make([]byte, 32)
	for i, v := range s {
		binary.BigEndian.PutUint64(out[i*8:], v)
	}
	return out
}

// recordHash hashes a record by its binary encoding, which carries
// everything replicated about it (token hashes included) and is the same
// bytes on every node.
func recordHash(r *keyindex.Record) [32]byte {
	var buf [512]byte // most records fit: no allocation
	return encodedRecordHash(keyindex.AppendRecord(buf[:0], r))
}

// encodedRecordHash is recordHash of a record already in its encoding.
func encodedRecordHash(enc []byte) [32]byte { return sha256.Sum256(enc) }

// auditHash hashes an audit entry by its snapshot encoding (JSON).
func auditHash(e *AuditEntry) [32]byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // audit entries are plain data: cannot fail
	}
	return sha256.Sum256(b)
}
