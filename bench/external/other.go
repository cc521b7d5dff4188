//go:build !linux

// Command external measures mayfly against nginx and a Go reverse proxy,
// each in its own process; it reads /proc, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/external runs on Linux only (it reads /proc)")
	os.Exit(2)
}
