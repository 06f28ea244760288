// Package fuzzseed writes seed corpus files for go test -fuzz targets, in
// the format the go command reads from testdata/fuzz/<FuzzName>/. Tests use
// it to regenerate their committed seeds (see docs/testing.md).
package fuzzseed

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Enabled reports whether seeds should be (re)written: KEYRAFT_WRITE_SEEDS=1.
func Enabled() bool { return os.Getenv("KEYRAFT_WRITE_SEEDS") == "1" }

// Encode returns the corpus file for one input of a fuzz target whose
// arguments have the types of vals ([]byte, string, bool, uint8, uint16,
// uint32, uint64, int, int64).
func Encode(vals ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%+q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%+q)\n", v)
		case bool, uint8, uint16, uint32, uint64, int, int64:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		default:
			panic(fmt.Sprintf("fuzzseed: unsupported type %T", v))
		}
	}
	return []byte(b.String())
}

// Write stores one input under testdata/fuzz/<target>/ of the calling
// package, named after its content (as the go command names new inputs),
// prefixed with name so that a reader sees what each seed is for.
func Write(target, name string, vals ...any) error {
	data := Encode(vals...)
	sum := sha256.Sum256(data)
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:4])), data, 0o644)
}

// Reset removes every seed of target, before a full rewrite.
func Reset(target string) error {
	return os.RemoveAll(filepath.Join("testdata", "fuzz", target))
}
