package alert

import (
	"strconv"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key := []byte("0123456789abcdef-test-key")
	body := []byte(`{"rule":"leak_revoked","audit_index":7}`)
	now := time.Unix(1_800_000_000, 0)
	ts := now.Unix()
	sig := Sign(key, ts, body)
	tests := []struct {
		name      string
		key       []byte
		ts, sig   string
		body      []byte
		now       time.Time
		wantError bool
	}{
		{"good", key, strconv.FormatInt(ts, 10), sig, body, now, false},
		{"within tolerance", key, strconv.FormatInt(ts, 10), sig, body, now.Add(4 * time.Minute), false},
		{"replayed later", key, strconv.FormatInt(ts, 10), sig, body, now.Add(6 * time.Minute), true},
		{"timestamp changed", key, strconv.FormatInt(ts+1, 10), sig, body, now, true},
		{"body changed", key, strconv.FormatInt(ts, 10), sig, []byte(`{"rule":"leak_revoked","audit_index":8}`), now, true},
		{"other key", []byte("another-key-of-16+bytes"), strconv.FormatInt(ts, 10), sig, body, now, true},
		{"no prefix", key, strconv.FormatInt(ts, 10), sig[len("sha256="):], body, now, true},
		{"bad timestamp", key, "yesterday", sig, body, now, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.key, tt.ts, tt.sig, tt.body, tt.now, 5*time.Minute)
			if (err != nil) != tt.wantError {
				t.Fatalf("Verify = %v, want error %v", err, tt.wantError)
			}
		})
	}
	// A known answer (openssl dgst -sha256 -hmac KEY over "1800000000." +
	// body), so the construction cannot drift unnoticed.
	if want := "sha256=55b536197d0d60b591ac268b74a61b0c825842568125d18a28c8715eb4a812e6"; sig != want {
		t.Fatalf("Sign = %s, want %s", sig, want)
	}
}

func FuzzVerify(f *testing.F) {
	key := []byte("0123456789abcdef")
	f.Add("1800000000", "sha256=00", []byte("{}"))
	f.Add("-1", "", []byte(nil))
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		now := time.Unix(1_800_000_000, 0)
		err := Verify(key, ts, sig, body, now, time.Minute)
		if err == nil && sig != Sign(key, mustInt(ts), body) {
			t.Fatalf("accepted a signature Sign did not make")
		}
	})
}

func mustInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
