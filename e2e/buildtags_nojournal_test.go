//go:build mayfly_nojournal

package e2e

// buildTags: see buildtags_test.go.
const buildTags = "mayfly_nojournal"
