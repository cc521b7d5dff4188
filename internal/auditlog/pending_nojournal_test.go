//go:build !linux || mayfly_nojournal

package auditlog

import "testing"

func pendingJournal(t *testing.T) string { t.Fatal("no journal here"); return "" }

func journalPathTB(tb testing.TB) string { tb.Fatal("no journal here"); return "" }
