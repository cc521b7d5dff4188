package audit

import (
	"testing"

	"golang.org/x/mod/sumdb/note"
)

var testSigner, testVerifier = mustKey("mayfly.test/audit")

func mustKey(origin string) (string, string) {
	s, v, err := GenerateKey(origin)
	if err != nil {
		panic(err)
	}
	return s, v
}

// forgedNote signs text with a key of the same name as testSigner's but
// another secret.
func forgedNote(t *testing.T, text string) []byte {
	skey, _ := mustKey("mayfly.test/audit")
	sg, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Sign(&note.Note{Text: text}, sg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
