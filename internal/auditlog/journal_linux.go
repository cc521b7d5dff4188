//go:build !mayfly_nojournal

package auditlog

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The journal's system calls. They are Linux's: the journal relies on a
// shared mapping of a preallocated file (mmap, fallocate) whose header page
// can be synced alone (msync), on fdatasync, and on flock to keep a second
// process out. Elsewhere (journal_other.go) there is no journal and every
// entry goes to the store, as on PostgreSQL.

// journalSupported tells whether Options.Journal can be used here.
const journalSupported = true

// lockFile locks f against a second process, without waiting.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// mapFile maps size bytes of f, shared and writable.
func mapFile(f *os.File, size int64) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func unmapFile(m []byte) error { return unix.Munmap(m) }

// prefault makes m's pages present and writable without changing them
// (MADV_POPULATE_WRITE), so that a copy into them takes no page fault. It
// reports false where the kernel has no such advice (before Linux 5.14).
// Any other failure (a disk without room for a sparse file's block) is the
// copy's to report, as without it.
func prefault(m []byte) (supported bool) {
	return !errors.Is(unix.Madvise(m, unix.MADV_POPULATE_WRITE), unix.EINVAL)
}

// reserveBlocks gives f's first size bytes disk blocks where it can. A disk
// without room, or a file system without fallocate, leaves the file sparse
// (see allocate).
func reserveBlocks(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err != nil && !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	return nil
}

// syncMapped writes the pages of m, part of a mapping, to the disk.
func syncMapped(m []byte) error { return unix.Msync(m, unix.MS_SYNC) }

// datasync makes f's data durable.
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
