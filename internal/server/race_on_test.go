//go:build race

package server

// raceDetector says the race detector is on: its own costs (a mutex
// operation grows with the history it keeps) swamp timings that compare
// the code's work at two sizes.
const raceDetector = true
