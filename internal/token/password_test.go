package token

import (
	"strings"
	"testing"
)

func TestNewPasswordAndParse(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		p, err := NewPassword()
		if err != nil {
			t.Fatal(err)
		}
		if PasswordLen != 41 || len(p) != PasswordLen || !strings.HasPrefix(p, "mfyp_") {
			t.Fatalf("shape of %s", PasswordHint(p))
		}
		if err := ParsePassword(p); err != nil {
			t.Fatalf("ParsePassword(new) = %v", err)
		}
		body := p[len(PasswordPrefix) : len(PasswordPrefix)+BodyLen]
		if refChecksum(body) != p[len(p)-ChecksumLen:] {
			t.Fatal("checksum differs from the reference")
		}
		if _, err := Parse(p); err == nil {
			t.Fatal("a password parses as a bearer token")
		}
		if seen[p] {
			t.Fatal("duplicate password")
		}
		seen[p] = true
	}
}

func TestParsePasswordRefuses(t *testing.T) {
	p, _ := NewPassword()
	flip := []byte(p)
	if flip[10] == 'a' {
		flip[10] = 'b'
	} else {
		flip[10] = 'a'
	}
	j, _ := New(Job)
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"empty", "", ErrFormat},
		{"prefix only", "mfyp_", ErrFormat},
		{"short", p[:len(p)-1], ErrFormat},
		{"long", p + "0", ErrFormat},
		{"job token", j, ErrFormat},
		{"job body under the password prefix", "mfyp_" + j[len(JobPrefix):len(JobPrefix)+BodyLen] + "00000!", ErrFormat},
		{"quote inside", p[:20] + "'" + p[21:], ErrFormat},
		{"one character changed", string(flip), ErrChecksum},
		{"other prefix", "mfyq_" + p[5:], ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ParsePassword(tc.in)
			if err != tc.want {
				t.Fatalf("ParsePassword = %v, want %v", err, tc.want)
			}
			if tc.in != "" && strings.Contains(err.Error(), tc.in) {
				t.Fatal("error holds the input")
			}
		})
	}
}

func TestFindPasswords(t *testing.T) {
	p, _ := NewPassword()
	q, _ := NewPassword()
	bad := p[:len(p)-1] + string(Alphabet[(strings.IndexByte(Alphabet, p[len(p)-1])+1)%62])
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"alone", p, []string{p}},
		{"in a DSN", "postgres://mayfly_ab:" + p + "@127.0.0.1:5432/app", []string{p}},
		{"env", "PGPASSWORD=" + p + "\nX=" + q, []string{p, q}},
		{"glued left", "x" + p, []string{p}},
		{"glued right", p + "x", []string{p}},
		{"after JSON's escaped newline", `{"log":"PGPASSWORD:\n` + p + `"}`, []string{p}},
		{"bad checksum", bad, nil},
		{"truncated", p[:30], nil},
		{"none", "mfyp_ mfy_ nothing", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, m := range FindPasswords([]byte(tc.in)) {
				if tc.in[m.Offset:m.Offset+PasswordLen] != m.Password {
					t.Fatal("wrong offset")
				}
				got = append(got, m.Password)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("FindPasswords = %d matches, want %d", len(got), len(tc.want))
			}
		})
	}
	if PasswordHint(p) != p[:9]+"…" || PasswordHint("x") != "…" {
		t.Fatal("hint")
	}
}

func FuzzParsePassword(f *testing.F) {
	p, _ := NewPassword()
	f.Add(p)
	f.Add("mfyp_")
	f.Add("mfyp_" + strings.Repeat("0", 36))
	f.Fuzz(func(t *testing.T, s string) {
		if err := ParsePassword(s); err != nil {
			// Short inputs are words the fixed message may hold ("a").
			if len(s) >= 12 && strings.Contains(err.Error(), s) {
				t.Fatal("error holds the input")
			}
			return
		}
		body := s[len(PasswordPrefix):][:BodyLen]
		if refChecksum(body) != s[len(s)-ChecksumLen:] {
			t.Fatal("accepted a password with a wrong checksum")
		}
		if m := FindPasswords([]byte(":" + s + "@")); len(m) != 1 || m[0].Password != s || m[0].Offset != 1 {
			t.Fatal("FindPasswords missed a valid password")
		}
	})
}

func FuzzFindPasswords(f *testing.F) {
	p, _ := NewPassword()
	f.Add([]byte("PGPASSWORD=" + p))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range FindPasswords(b) {
			if ParsePassword(m.Password) != nil || string(b[m.Offset:m.Offset+PasswordLen]) != m.Password {
				t.Fatal("FindPasswords returned an invalid password or offset")
			}
		}
	})
}
