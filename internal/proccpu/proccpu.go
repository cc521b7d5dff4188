// Package proccpu reads the CPU time this process has used, for the
// benchmarks that report CPU per operation beside wall time. It only
// measures; it must never be used to decide anything at run time.
package proccpu
