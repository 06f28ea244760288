//go:build !linux

package cluster

// dropFileMappings is Linux only (it reads /proc/self/maps); elsewhere bolt's
// pages stay mapped until the file is closed.
func dropFileMappings(string) uint64 { return 0 }
