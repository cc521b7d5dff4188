package api

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// A lease-listing cursor is opaque to clients: base64url of
// "1.<issued_at unix nanoseconds>.<lease id>", the last lease of a page.
const (
	cursorVersion = "1"
	maxCursorLen  = 256
)

var errBadCursor = errors.New("malformed cursor")

func formatLeaseCursor(c lease.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + "." + strconv.FormatInt(c.IssuedAt.UnixNano(), 10) + "." + c.ID))
}

// parseLeaseCursor reads a cursor from a query string: bounded, and only a
// lease id's characters, so nothing else reaches the store's query.
func parseLeaseCursor(s string) (lease.Cursor, error) {
	if len(s) > maxCursorLen {
		return lease.Cursor{}, errBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return lease.Cursor{}, errBadCursor
	}
	v, rest, ok := strings.Cut(string(b), ".")
	if !ok || v != cursorVersion {
		return lease.Cursor{}, errBadCursor
	}
	ns, id, ok := strings.Cut(rest, ".")
	if !ok || id == "" || len(id) > 128 {
		return lease.Cursor{}, errBadCursor
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || n < 0 {
		return lease.Cursor{}, errBadCursor
	}
	for _, r := range id {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return lease.Cursor{}, errBadCursor
		}
	}
	return lease.Cursor{IssuedAt: time.Unix(0, n).UTC(), ID: id}, nil
}
