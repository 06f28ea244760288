package keyindex

import (
	"encoding/binary"
	"hash/crc32"
)

// A token's checksum is the standard CRC-32 (IEEE) of all but its last 6
// bytes: 38 to 51 bytes. hash/crc32 only switches to carry-less multiplication
// at 64 bytes; below that it runs slicing-by-8 behind a few calls, which was
// half of ParseToken's time. tokenCRC computes the same value with
// slicing-by-16 lookups laid out for the token's shape, without loops.
//
// CRC arithmetic used here, with R(reg, m) the 32-bit register after
// feeding bytes m to register reg (ChecksumIEEE(m) = ^R(^0, m)):
//
//   - A step of n <= 16 bytes XORs the register into the first four bytes,
//     then XORs together one lookup per byte: byte i in crcTab[n-1-i].
//     Only those four lookups wait for the register; the others can be done
//     ahead of it.
//   - R is linear: R(reg, m) = R(reg, n zero bytes) ^ R(0, m), and leading
//     zero bytes do not change R(0, ·). So a prefix of any length up to 16
//     is one step of 16 bytes with zeros in front of it, plus a constant
//     that depends only on its length (crcInit).

// crcTable[k][b] is R(0, b followed by k zero bytes).
type crcTable [16][256]uint32

// crcTab is a pointer variable rather than the array on purpose: the
// compiler then keeps the address in a register and reaches each row by a
// constant displacement, instead of an LEA before each lookup (a little
// faster, measurably so with a workspace prefix).
var crcTab = func() *crcTable {
	t := new(crcTable)
	t[0] = *crc32.MakeTable(crc32.IEEE)
	for b := range 256 {
		c := t[0][b]
		for k := 1; k < len(t); k++ {
			c = t[0][byte(c)] ^ c>>8
			t[k][b] = c
		}
	}
	return t
}()

// crcInit[n] is R(^0, n zero bytes): the initial register's part of the
// register after any n bytes.
var crcInit = func() (t [17]uint32) {
	for n := range t {
		t[n] = crcReg(^uint32(0), make([]byte, n))
	}
	return t
}()

// crcReg is R(reg, m), by hash/crc32 (which works on the inverted register);
// it serves the tables, not the hot path.
func crcReg(reg uint32, m []byte) uint32 {
	return ^crc32.Update(^reg, crc32.IEEETable, m)
}

// tokenCRC returns crc32.ChecksumIEEE(tok[:headLen+randomChars]), the
// checksum of a token whose head tok[:headLen] ends in the "kind_env_"
// described by ke (those 8 bytes are not read again) and has at most 16
// bytes in front of that (ParseToken: 0, or "ws_" of 2 to 13). Any byte
// values are fine; it reads nothing past tok[:headLen+randomChars].
func tokenCRC(tok []byte, headLen int, ke *kindEnv) uint32 {
	t := crcTab
	le := binary.LittleEndian
	reg := ke.reg // R(^0, "kind_env_"): the head's register if there is no "ws_"
	if w := headLen - len("sk_live_"); w > 0 {
		// "ws_" is tok[:w]. Shift the token's first 16 bytes left so that
		// "ws_" ends the 128-bit value hi:lo with zeros in front of it,
		// without a loop or a branch on w (Go's shifts by 64 or more give 0).
		lo, hi := le.Uint64(tok[0:8]), le.Uint64(tok[8:16])
		s := uint(16-w) * 8
		hi = hi<<s | lo>>(64-s) | lo<<(s-64)
		lo <<= s
		// R(^0, "ws_") is one step of 16, all independent lookups.
		ws := crcInit[w] ^
			(t[15][byte(lo)] ^ t[14][byte(lo>>8)] ^ t[13][byte(lo>>16)] ^ t[12][byte(lo>>24)]) ^
			(t[11][byte(lo>>32)] ^ t[10][byte(lo>>40)] ^ t[9][byte(lo>>48)] ^ t[8][lo>>56]) ^
			(t[7][byte(hi)] ^ t[6][byte(hi>>8)] ^ t[5][byte(hi>>16)] ^ t[4][byte(hi>>24)]) ^
			(t[3][byte(hi>>32)] ^ t[2][byte(hi>>40)] ^ t[1][byte(hi>>48)] ^ t[0][hi>>56])
		// Then "kind_env_": R(ws, 8 zero bytes) ^ R(0, "kind_env_").
		reg = ke.raw ^ (t[7][byte(ws)] ^ t[6][byte(ws>>8)]) ^ (t[5][byte(ws>>16)] ^ t[4][ws>>24])
	}
	// The 30 random characters: a step of 16 and a step of 14.
	p := (*[randomChars]byte)(tok[headLen:])
	rest := (t[11][p[4]] ^ t[10][p[5]] ^ t[9][p[6]] ^ t[8][p[7]]) ^
		(t[7][p[8]] ^ t[6][p[9]] ^ t[5][p[10]] ^ t[4][p[11]]) ^
		(t[3][p[12]] ^ t[2][p[13]] ^ t[1][p[14]] ^ t[0][p[15]])
	reg ^= le.Uint32(p[0:4])
	reg = rest ^ (t[15][byte(reg)] ^ t[14][byte(reg>>8)]) ^ (t[13][byte(reg>>16)] ^ t[12][reg>>24])
	rest = (t[9][p[20]] ^ t[8][p[21]] ^ t[7][p[22]] ^ t[6][p[23]] ^ t[5][p[24]]) ^
		(t[4][p[25]] ^ t[3][p[26]] ^ t[2][p[27]] ^ t[1][p[28]] ^ t[0][p[29]])
	reg ^= le.Uint32(p[16:20])
	reg = rest ^ (t[13][byte(reg)] ^ t[12][byte(reg>>8)]) ^ (t[11][byte(reg>>16)] ^ t[10][reg>>24])
	return ^reg
}
