//go:build !unix

package datadir

// RequireOwner is a Unix check (root writing into another user's data
// dir); elsewhere nothing is refused.
func (d Dir) RequireOwner() error { return nil }
