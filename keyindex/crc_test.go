package keyindex

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// The tables are what crc.go says they are, by the definition of the
// register (hash/crc32 computes it).
func TestCRCTables(t *testing.T) {
	for k := range crcTab {
		for b := range 256 {
			m := make([]byte, 1+k)
			m[0] = byte(b)
			if got, want := crcTab[k][b], crcReg(0, m); got != want {
				t.Fatalf("crcTab[%d][%#x] = %#x, want %#x", k, b, got, want)
			}
		}
	}
	for n := range crcInit {
		// The initial register's part is what n zero bytes leave of it.
		if got, want := crcInit[n], ^crc32.ChecksumIEEE(make([]byte, n)); got != want {
			t.Fatalf("crcInit[%d] = %#x, want %#x", n, got, want)
		}
	}
	// crcReg(^0, m) is the register ChecksumIEEE inverts at the end.
	m := []byte("sk_live_0123456789")
	if crcReg(^uint32(0), m) != ^crc32.ChecksumIEEE(m) {
		t.Fatal("crcReg disagrees with ChecksumIEEE")
	}
}

// tokenCRC is crc32.ChecksumIEEE of all but the last 6 bytes, for every
// head length it can be given (workspace part w = 0..16 bytes, though
// ParseToken only passes 0 and 2..13) and every "kind_env_", on random
// bytes of every value (it does not rely on the characters being valid) and
// on all-zero and all-0xff bytes.
func TestTokenCRCMatchesHashCRC32(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fills := []func(p []byte){
		func(p []byte) {
			for i := range p {
				p[i] = byte(r.Uint32())
			}
		},
		func(p []byte) { clear(p) },
		func(p []byte) {
			for i := range p {
				p[i] = 0xff
			}
		},
		func(p []byte) {
			for i := range p {
				p[i] = base62Alphabet[r.IntN(len(base62Alphabet))]
			}
		},
	}
	for w := 0; w <= 16; w++ {
		for i := range kindEnvs {
			ke := &kindEnvs[i]
			if ke.typ == "" {
				continue
			}
			for trial := range 300 {
				tok := make([]byte, w+8+bodyChars)
				fills[trial%len(fills)](tok)
				// tokenCRC takes the "kind_env_" from ke, not from tok.
				head := tok[:w+8]
				copy(head[w:], ke.typ.kindCode()+"_"+string(ke.env)+"_")
				want := crc32.ChecksumIEEE(tok[:len(tok)-checksumChars])
				if got := tokenCRC(tok, len(head), ke); got != want {
					t.Fatalf("w=%d %s/%s: tokenCRC(%q) = %#x, want %#x", w, ke.typ, ke.env, tok, got, want)
				}
			}
		}
	}
}

func BenchmarkTokenCRC(b *testing.B) {
	for _, ws := range []string{"", "acme"} {
		tok := []byte(mustGenerate(b, ws, TypeSecret, EnvLive).Plaintext)
		headLen := len(tok) - bodyChars
		ke := parseKindEnv(binary.LittleEndian.Uint64(tok[headLen-8:]))
		b.Run("ws="+ws, func(b *testing.B) {
			var sink uint32
			for b.Loop() {
				sink += tokenCRC(tok, headLen, ke)
			}
			_ = sink
		})
		b.Run("ws="+ws+"/hash-crc32", func(b *testing.B) {
			var sink uint32
			for b.Loop() {
				sink += crc32.ChecksumIEEE(tok[:len(tok)-checksumChars])
			}
			_ = sink
		})
	}
}
