// Package bench holds keyraft's performance measurements: in-process
// benchmarks of the hot path against its floor (a bare SHA-256 and a plain Go
// map lookup at the same size), and, in later steps, load drivers and peer
// comparisons. Figures are reported as ratios to a baseline measured in the
// same run; see README.md.
package bench
