//go:build race

package api_test

// raceEnabled: the race detector makes sync.Pool drop a quarter of what is
// put back, so allocation counts under it say nothing about the code.
const raceEnabled = true
