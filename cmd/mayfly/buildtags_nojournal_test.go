//go:build mayfly_nojournal

package main

// buildTags: see buildtags_test.go.
const buildTags = "mayfly_nojournal"
