//go:build !mayfly_nojournal

package e2e

// buildTags are the tags the binary under test is built with: those of
// this test's build, so that `go test -tags mayfly_nojournal` runs it on
// the portable path (no audit journal, as on macOS and Windows).
const buildTags = ""
