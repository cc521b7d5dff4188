package mint

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// An upstream's error text is cut before it goes into an audit entry, a
// log line and the record's last_error. A mayfly token or minted password
// the text quotes across the cut lost its checksum there, so the audit
// log's and the logger's redaction no longer saw a credential, yet its
// characters before the checksum give it whole (the checksum follows from
// them). The cut now never splits a credential's run of characters.
func TestFailureTextCutKeepsNoCredential(t *testing.T) {
	job, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	for _, cred := range []string{job, pw} {
		body := cred[:len(cred)-token.ChecksumLen] // gives the whole credential
		// The cut (300 bytes) falls after the body: inside the checksum,
		// or right after it.
		for _, in := range []int{len(cred) - token.ChecksumLen, len(cred) - 3, len(cred) - 1} {
			text := strings.Repeat("e", 300-in) + cred + " was refused by the upstream"
			for _, step := range []string{"mint", "revocation"} {
				t.Run(fmt.Sprintf("%s %d of %s in", step, in, cred[:4]), func(t *testing.T) {
					h := newHarness(t, storetest.SQLite(t))
					logs := &lockedBuffer{}
					h.m.cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
					h.lease(t, "lse_cut")
					row := ""
					switch step {
					case "mint":
						h.up.failMint = errors.New(text)
						if _, err := h.m.Mint(ctx, "lse_cut", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(time.Minute)); err == nil {
							t.Fatal("minted")
						}
					case "revocation":
						is := h.mint(t, "lse_cut")
						h.up.failRevoke, h.up.failWith = 1, text
						if err := h.m.RevokeLeases(ctx, []string{"lse_cut"}, "leaked"); err != nil {
							t.Fatal(err)
						}
						h.m.RevokeDue(ctx)
						rec := h.record(t, is.ID)
						if rec.State != store.MintRevoking || rec.LastError == "" {
							t.Fatalf("no failed revocation on record: %+v", rec)
						}
						row = rec.LastError
					}
					for what, s := range map[string]string{"the audit log": h.entries(t), "the log lines": logs.String(), "last_error": row} {
						if i := strings.Index(s, body); i >= 0 {
							t.Errorf("%s holds the credential cut in its checksum: …%s…", what, s[max(0, i-20):min(len(s), i+len(body)+10)])
						}
					}
				})
			}
		}
	}
}

// A failed revocation's text is kept in the record (last_error) as well as
// in its audit entry: a mayfly token or minted password it quotes whole is
// kept there as its hint, as the audit log and the logs keep it, never
// whole in a database row.
func TestFailureTextRowKeepsNoCredential(t *testing.T) {
	job, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, cred, hint string }{
		{"job token", job, token.Hint(job)},
		{"minted password", pw, token.PasswordHint(pw)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, storetest.SQLite(t))
			h.lease(t, "lse_row")
			is := h.mint(t, "lse_row")
			h.up.failRevoke, h.up.failWith = 1, "the upstream refused "+tc.cred+" for now"
			if err := h.m.RevokeLeases(ctx, []string{"lse_row"}, "leaked"); err != nil {
				t.Fatal(err)
			}
			h.m.RevokeDue(ctx)
			rec := h.record(t, is.ID)
			if strings.Contains(rec.LastError, tc.cred) || !strings.Contains(rec.LastError, tc.hint) {
				t.Errorf("last_error %q: want the credential as its hint %q", rec.LastError, tc.hint)
			}
		})
	}
}
