//go:build !unix

package datadir

// RequireOwner is a Unix check (root writing into another user's data
// dir); elsewhere nothing is refused.
func (d Dir) RequireOwner() error { return nil }

// RequireUnshared is a Unix check (a data dir others may change):
// Windows directories have ACLs, not one owner's mode bits.
func (d Dir) RequireUnshared() error { return nil }
