//go:build !linux

// Command vault compares mayfly's token exchange with Vault's JWT login,
// each in its own process; it reads /proc, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench/vault runs on Linux only (it reads /proc)")
	os.Exit(2)
}
