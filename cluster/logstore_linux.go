package cluster

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dropFileMappings advises MADV_DONTNEED over every mapping of the file at
// path (an absolute path, as /proc/self/maps shows it) and returns how many
// bytes of address space that covered. The caller makes sure no mapping of
// the file is replaced meanwhile. Safe only for mappings that cannot hold
// changes of their own, as bolt's (read-only, shared) cannot: the pages
// are dropped, not written back.
func dropFileMappings(path string) (covered uint64) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, perms, name, ok := parseMapsLine(sc.Text())
		// Only a shared mapping (perms "r--s"): a private one may hold
		// copies of pages changed in memory, which DONTNEED would discard.
		if !ok || name != path || len(perms) < 4 || perms[3] != 's' || perms[1] == 'w' {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); errno == 0 {
			covered += end - start
		}
	}
	return covered
}

// parseMapsLine splits a /proc/self/maps line:
// "start-end perms offset dev inode   pathname" (pathname may hold spaces).
func parseMapsLine(line string) (start, end uint64, perms, name string, ok bool) {
	fields := make([]string, 0, 5)
	rest := line
	for len(fields) < 5 {
		rest = strings.TrimLeft(rest, " ")
		f, r, found := strings.Cut(rest, " ")
		if !found {
			return 0, 0, "", "", false
		}
		fields, rest = append(fields, f), r
	}
	lo, hi, found := strings.Cut(fields[0], "-")
	if !found {
		return 0, 0, "", "", false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return 0, 0, "", "", false
	}
	return start, end, fields[1], strings.TrimLeft(rest, " "), true
}
