package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/mayfly-sh/mayfly/internal/token"
)

func signedCheckpoint(t testing.TB, skey, text string) []byte {
	t.Helper()
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

func TestParseCheckpoint(t *testing.T) {
	root := [32]byte{1, 2, 3}
	good := string(FormatCheckpoint("mayfly.test/audit", 42, root))
	otherSigner, _ := mustKey("other.example/log")
	cases := []struct {
		name string
		text []byte
		size int64
		ok   bool
	}{
		{"good", signedCheckpoint(t, testSigner, good), 42, true},
		{"extension line", signedCheckpoint(t, testSigner, good+"ext line\n"), 42, true},
		{"zero", signedCheckpoint(t, testSigner, string(FormatCheckpoint("mayfly.test/audit", 0, root))), 0, true},
		{"wrong origin", signedCheckpoint(t, testSigner, strings.Replace(good, "mayfly.test/audit", "mayfly.test/other", 1)), 0, false},
		{"other key", signedCheckpoint(t, otherSigner, good), 0, false},
		{"forged same name", forgedNote(t, good), 0, false},
		{"leading zero size", signedCheckpoint(t, testSigner, "mayfly.test/audit\n042\n"+strings.Split(good, "\n")[2]+"\n"), 0, false},
		{"negative size", signedCheckpoint(t, testSigner, "mayfly.test/audit\n-1\n"+strings.Split(good, "\n")[2]+"\n"), 0, false},
		{"short hash", signedCheckpoint(t, testSigner, "mayfly.test/audit\n1\nAAAA\n"), 0, false},
		{"two lines", signedCheckpoint(t, testSigner, "mayfly.test/audit\n1\n"), 0, false},
		{"empty extension", signedCheckpoint(t, testSigner, good+"\n"), 0, false},
		{"unsigned", []byte(good), 0, false},
		{"altered", bytes.Replace(signedCheckpoint(t, testSigner, good), []byte("\n42\n"), []byte("\n43\n"), 1), 0, false},
		{"huge", bytes.Repeat([]byte("a"), MaxCheckpointSize+1), 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			size, r, err := ParseCheckpoint(c.text, testVerifier)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if c.ok && (size != c.size || r != root) {
				t.Fatalf("got %d %x", size, r)
			}
		})
	}
	if _, _, err := ParseCheckpoint(signedCheckpoint(t, testSigner, good), "not a key"); err == nil {
		t.Fatal("bad verifier key accepted")
	}
	if v, err := VerifierKeyFor(testSigner); err != nil || v != testVerifier {
		t.Fatalf("VerifierKeyFor = %q, %v", v, err)
	}
	for _, bad := range []string{"", "PRIVATE+KEY+x", testVerifier, "PRIVATE+KEY+a+00000000+AAAA"} {
		if _, err := VerifierKeyFor(bad); err == nil {
			t.Fatalf("VerifierKeyFor(%q) accepted", bad)
		}
	}
}

func TestParseEntry(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"good", `{"index":3,"time":"2025-01-02T03:04:05.123Z","type":"gateway.request","status":200,"detail":{"k":[1,2]}}`, true},
		{"unknown field", `{"index":3,"time":"2025-01-02T03:04:05Z","type":"x","future":1}`, true},
		{"no index", `{"time":"2025-01-02T03:04:05Z","type":"x"}`, false},
		{"negative index", `{"index":-3,"time":"2025-01-02T03:04:05Z","type":"x"}`, false},
		{"float index", `{"index":3.5,"time":"2025-01-02T03:04:05Z","type":"x"}`, false},
		{"no time", `{"index":3,"type":"x"}`, false},
		{"not utc", `{"index":3,"time":"2025-01-02T03:04:05+01:00","type":"x"}`, false},
		{"zero offset", `{"index":3,"time":"2025-01-02T03:04:05+00:00","type":"x"}`, false},
		{"bad time", `{"index":3,"time":"yesterday","type":"x"}`, false},
		{"no type", `{"index":3,"time":"2025-01-02T03:04:05Z"}`, false},
		{"bad type", `{"index":3,"time":"2025-01-02T03:04:05Z","type":"A B"}`, false},
		{"array", `[1]`, false},
		{"trailing", `{"index":3,"time":"2025-01-02T03:04:05Z","type":"x"} x`, false},
		{"empty", ``, false},
		{"huge", `{"index":3,"time":"2025-01-02T03:04:05Z","type":"x","reason":"` + strings.Repeat("a", MaxEntrySize) + `"}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := ParseEntry([]byte(c.in))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if c.ok && e.Index != 3 {
				t.Fatalf("index %d", e.Index)
			}
		})
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"index":3,"time":"2025-01-02T03:04:05.123Z","type":"gateway.request","status":200,"detail":{"k":[1,2]}}`))
	f.Add([]byte(`{"index":0,"time":"2025-01-02T03:04:05Z","type":"x"}`))
	f.Add([]byte(`{"index":1e3,"time":"2025-01-02T03:04:05Z","type":"x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		_ = EntryIndex(b)
		if err != nil {
			return
		}
		if e.Index < 0 || !validType(e.Type) || e.Time.IsZero() && !bytes.Contains(b, []byte("0001")) {
			t.Fatalf("accepted invalid entry %q: %+v", b, e)
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		// Re-encoding what was parsed parses to the same index and type.
		body, err := EncodeEvent(nil, &e.Event)
		if err != nil {
			return // e.g. a detail value too large after hints
		}
		again, err := ParseEntry(AppendEntry(nil, e.Index, e.Time.Format(timeLayout), body))
		if err != nil || again.Index != e.Index || again.Type != e.Type {
			t.Fatalf("round trip of %q: %+v, %v", b, again, err)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	root := [32]byte{9}
	good := string(FormatCheckpoint("mayfly.test/audit", 42, root))
	f.Add(signedCheckpoint(f, testSigner, good))
	f.Add(signedCheckpoint(f, testSigner, good+"ext\n"))
	f.Add([]byte(good))
	f.Add(forgedNote(&testing.T{}, good))
	f.Fuzz(func(t *testing.T, b []byte) {
		size, _, err := ParseCheckpoint(b, testVerifier)
		if err != nil {
			return
		}
		if size < 0 {
			t.Fatalf("negative size from %q", b)
		}
		// Only notes really signed with the key pass.
		if _, err := note.Open(b, note.VerifierList(mustVerifier(t))); err != nil {
			t.Fatalf("accepted a note that does not verify: %q", b)
		}
		_, _, _ = parseCheckpointBody(string(b), "mayfly.test/audit")
	})
}

func mustVerifier(t testing.TB) note.Verifier {
	v, err := note.NewVerifier(testVerifier)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// appendEvent writes exactly what json.Marshal writes, for any field values.
func FuzzAppendEvent(f *testing.F) {
	f.Add("gateway.request", "l-1", "/repos/a/b", "<&>\"\\\u2028\xff", int64(200), int64(0), "k", "v")
	f.Add("token.issue", "", "", "", int64(-5), int64(1<<40), "", "")
	f.Add("x", "é", "\x00\x1f\x7f", "ok", int64(0), int64(3), "n", "\u00e9")
	f.Fuzz(func(t *testing.T, typ, lease, path, reason string, status, bytes int64, dk, dv string) {
		ev := Event{Type: typ, Lease: lease, Issuer: lease + path, Path: path, Reason: reason, Status: int(status),
			BytesIn: bytes, BytesOut: -bytes, DurationMS: status ^ bytes, Hint: reason, SecretVersion: int(bytes), Count: status}
		if dk != "" {
			ev.Detail = map[string]any{dk: dv, "n": status, "b": bytes > 0}
		}
		want, err := json.Marshal(ev)
		if err != nil {
			t.Skip()
		}
		got, err := appendEvent(nil, &ev)
		if err != nil || string(got) != string(want) {
			t.Fatalf("appendEvent = %s, %v\njson.Marshal = %s", got, err, want)
		}
	})
}

func TestAppendEventMatchesJSON(t *testing.T) {
	full := Event{Type: "t", Lease: "l", Issuer: "i", Subject: "s", Job: "j", Repository: "r", Grant: "g", Upstream: "u",
		Method: "GET", Path: "/p", Status: 200, Source: "127.0.0.1", BytesIn: 1, BytesOut: 2, DurationMS: 3, Reason: "why",
		Check: "c", Hint: "h", PolicyVersion: "pv", Secret: "sec", SecretVersion: 4, KeyVersion: 5, Admin: "a", Role: "r",
		Count: 6, Detail: map[string]any{"z": 1, "a": []int{1}}}
	if n := reflect.TypeFor[Event]().NumField(); n != 26 {
		t.Fatalf("Event has %d fields, appendEvent and this test know 26: teach them the new ones", n)
	}
	flat := Event{Type: "t", Hint: "mfy_…a1b2", Reason: "del\x7f sep\u2029", Detail: map[string]any{"request_index": int64(7), "aborted": true, "rule": "<r>\u2028", "n": 3, "é": "x"}}
	for _, ev := range []Event{{Type: "t"}, full, flat, {Type: "t", Detail: map[string]any{}}} {
		want, _ := json.Marshal(ev)
		got, err := appendEvent(nil, &ev)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendEvent = %s, %v\njson.Marshal = %s", got, err, want)
		}
	}
}

// A token after a character JSON escapes is glued to the escape's last
// letter ("\n", "\u003c"); the entry must still hold only its hint.
func TestEncodeEventRedactsEscapedTokens(t *testing.T) {
	job, _ := token.New(token.Job)
	adm, _ := token.New(token.Admin)
	for _, tc := range []struct{ name, path, tok string }{
		{"plain", "/v1/admin/tokens/" + adm, adm},
		{"newline", "/v1/admin/tokens/\n" + adm, adm},
		{"tab", "/x/\t" + job, job},
		{"lt", "/x/<" + job, job},
		{"amp", "a&" + job, job},
		{"control", "a\x01" + job, job},
		{"glued both sides", "ab" + job + "cd", job},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeEvent(nil, &Event{Type: "admin.denied", Path: tc.path, Detail: map[string]any{"v": tc.path}})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), tc.tok) {
				t.Errorf("the entry holds the whole token %s", token.Hint(tc.tok))
			}
			if !strings.Contains(string(b), token.Hint(tc.tok)) {
				t.Errorf("the entry lost the token's hint: %s", b)
			}
		})
	}
}
