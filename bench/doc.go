// Package bench holds keyraft's performance measurements: in-process
// benchmarks of the hot path against its floor (a bare SHA-256 and a plain Go
// map lookup at the same size), and, under cmd/, the HTTP floor server
// (httpfloor) and the runner of the whole suite (benchrun: wrk, vegeta,
// Redis and etcd comparisons, revocation visibility, scale), started by
// scripts/bench.sh. Figures are reported as ratios to a baseline measured in
// the same run; see README.md.
package bench
