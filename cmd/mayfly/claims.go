package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/identity"
)

// refused reports whether an exchange failed because the server said no,
// rather than because it could not be reached.
func refused(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Refused()
}

// printIDTokenClaims writes the claims of a refused ID token, so that a
// job's log shows what it presented (as octo-sts/action does). Claim values
// are not secret; the token itself and its signature are never printed.
func printIDTokenClaims(w io.Writer, raw string) {
	u, err := identity.DecodeUnverified(raw)
	if err != nil {
		fmt.Fprintf(w, "mayfly: the ID token could not be decoded to show its claims: %v\n", err)
		return
	}
	names := make([]string, 0, len(u.Claims))
	for k := range u.Claims {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("mayfly: the ID token presented had these claims (not its signature); `mayfly policy test --id-token FILE POLICY` explains a refusal offline:\n")
	for _, k := range names {
		fmt.Fprintf(&b, "  %s: %s\n", claimLine(k), claimLine(u.Claims[k]))
	}
	io.WriteString(w, b.String())
}

// claimLine keeps a claim value on its line and bounded, and no control
// character (C0, DEL or C1: a branch name in head_ref may hold a C1 CSI,
// which git allows) reaches the terminal.
func claimLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f && r < 0xa0 {
			return '?'
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}
