package mask

import (
	"encoding/base64"
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

// The pause may come while the normalising thread, not the raw one, holds
// the beginning of a form: a token whose first characters a colour code
// or '\r' cut off (grep --color, a test runner's highlighting), or a long
// value's base64 whose first wrapped line has ended. The raw thread then
// holds nothing, and the idle flush (and a body's end) must still mask
// what the normalising thread holds, as it does the raw thread's.
func TestIdleFlushMasksFormHeldAcrossCodes(t *testing.T) {
	tok := "ghp_" + strings.Repeat("R4nd0mL00k", 3) + "ingT0kenVa" // mayfly:allow a 44-byte token
	long := strings.Repeat("p4ssw0rdP4SSW0RD", 8)                  // a 128-byte value, wrapped in base64
	enc := base64.StdEncoding.EncodeToString([]byte(long))
	tests := []struct {
		name          string
		secret        string
		first, second string // the two writes, with the pause between them
		shown         string // a piece of the secret that must never show
	}{
		{"colour code", tok, "token: " + tok[:6] + "\x1b[1m" + tok[6:20], tok[20:] + "\x1b[0m\n", tok[6:20]},
		{"carriage return", tok, "token: " + tok[:10] + "\r" + tok[10:24], tok[24:] + "\n", tok[10:24]},
		{"wrapped base64", long, enc[:76] + "\n" + enc[76:90], enc[90:] + "\n", enc[:76]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMatcher([][]byte{[]byte(tt.secret)})
			if err != nil {
				t.Fatal(err)
			}
			var out syncBuffer
			w := m.NewWriter(&out, Options{Idle: 5 * time.Millisecond})
			_, _ = w.Write([]byte(tt.first))
			for held := true; held; { // until the idle flush has written all
				time.Sleep(time.Millisecond)
				w.mu.Lock()
				held = w.s.done < w.s.pos
				w.mu.Unlock()
			}
			atPause := out.String()
			_, _ = w.Write([]byte(tt.second))
			_ = w.Close()
			if log := out.String(); strings.Contains(log, tt.shown) || !strings.Contains(log, DefaultReplacement) {
				t.Errorf("the idle flush wrote %q; the job log is %q", atPause, log)
			}

			// A gateway body cut off there shows it as little.
			st := m.NewStream(StreamOptions{})
			body := st.Flush(st.Mask(nil, []byte(tt.first)), MinSecretLen)
			if strings.Contains(string(body), tt.shown) {
				t.Errorf("a body cut off after the first piece reads %q", body)
			}
		})
	}
}
