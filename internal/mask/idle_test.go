package mask

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// A token printed in two writes with a pause in between (a buffered
// writer's flush, a pipe on a busy runner): the idle flush must not write
// a held prefix from which the token follows. A mayfly job token's last six
// characters are the public CRC of the thirty before, so a 34-character
// prefix is the whole token. A held beginning of MinSecretLen bytes or
// more is masked at the pause; a shorter one (a prompt) shows.
func TestIdleFlushMasksHeldForm(t *testing.T) {
	tok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	const before = "curl -H 'Authorization: Bearer "
	tests := []struct {
		cut  int
		want string // the job log
	}{
		{7, before + tok[:7] + "***' ...\n"}, // shorter than MinSecretLen: shows, as a prompt does
		// Masked at the pause, and the rest from there on.
		{MinSecretLen, before + "******' ...\n"},
		{34, before + "******' ...\n"},
		{36, before + "******' ...\n"},
		{39, before + "******' ...\n"},
	}
	for _, tt := range tests {
		m, err := NewMatcher([][]byte{[]byte(tok)})
		if err != nil {
			t.Fatal(err)
		}
		var out syncBuffer
		w := m.NewWriter(&out, Options{Idle: 5 * time.Millisecond})
		_, _ = w.Write([]byte(before + tok[:tt.cut]))
		idle := before + "***"
		if tt.cut < MinSecretLen {
			idle = before + tok[:tt.cut]
		}
		waitFor(t, &out, idle) // what the idle flush wrote
		_, _ = w.Write([]byte(tok[tt.cut:] + "' ...\n"))
		_ = w.Close()
		log := out.String()
		// What anyone reading the log can do: take "mfy_" and the 30
		// characters after it, append their checksum.
		if b := regexp.MustCompile(`mfy_[0-9A-Za-z]{30}`).FindString(log); b != "" && b+token.Checksum(b[4:]) == tok || strings.Contains(log, tok) {
			t.Errorf("cut after %d characters: job log %q gives back the whole live token", tt.cut, log)
		}
		if log != tt.want {
			t.Errorf("cut after %d characters: job log %q, want %q", tt.cut, log, tt.want)
		}
	}
}
