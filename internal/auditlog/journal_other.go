//go:build !linux || mayfly_nojournal

package auditlog

import "os"

// No journal here (see journal_linux.go): Open refuses Options.Journal,
// and every entry goes to the store in its own group commit, as on
// PostgreSQL, with the same guarantees: a durable entry's Wait answers once it
// is on disk, a written one's once the store has it where a crash of the process
// cannot lose it. The build tag mayfly_nojournal selects this path on Linux
// too, so that it is tested there.

// journalSupported tells whether Options.Journal can be used here.
const journalSupported = false

func lockFile(*os.File) error                 { return errNoJournal }
func mapFile(*os.File, int64) ([]byte, error) { return nil, errNoJournal }
func unmapFile([]byte) error                  { return errNoJournal }
func prefault([]byte) bool                    { return false }
func reserveBlocks(*os.File, int64) error     { return errNoJournal }
func syncMapped([]byte) error                 { return errNoJournal }
func datasync(*os.File) error                 { return errNoJournal }
