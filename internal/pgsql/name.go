package pgsql

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// NamePrefix starts every role mayfly makes. The sweeper only ever drops
// roles of the exact form mayfly_<24 hex>_<8 hex>, so an operator's own
// "mayfly_admin" is never touched.
const NamePrefix = "mayfly_"

// RoleName derives the role of lease leaseID on upstream: "mayfly_", 24
// hex characters of the lease and 8 of the upstream. Lease IDs of mayfly's
// own form (lse_ + 24 hex) are kept readable, so an operator who sees the
// role in pg_stat_activity finds its lease; anything else is hashed, so no
// lease or upstream name, however hostile, reaches SQL. The upstream part
// keeps two upstreams on one server (roles are per server, not per
// database) from colliding, and lets each upstream's sweep see only its own.
func RoleName(leaseID, upstream string) string {
	body, ok := strings.CutPrefix(leaseID, "lse_")
	if !ok || len(body) != 24 || !isLowerHex(body) {
		sum := sha256.Sum256([]byte("mayfly-pgrole-lease\x00" + leaseID))
		body = hex.EncodeToString(sum[:12])
	}
	return NamePrefix + body + "_" + UpstreamSuffix(upstream)
}

// UpstreamSuffix is the last part of the names of upstream's roles.
func UpstreamSuffix(upstream string) string {
	sum := sha256.Sum256([]byte("mayfly-pgrole-upstream\x00" + upstream))
	return hex.EncodeToString(sum[:4])
}

// ValidName reports whether s has the form of a role RoleName makes.
func ValidName(s string) bool {
	rest, ok := strings.CutPrefix(s, NamePrefix)
	return ok && len(rest) == 24+1+8 && rest[24] == '_' && isLowerHex(rest[:24]) && isLowerHex(rest[25:])
}

// OwnedBy reports whether role s is one RoleName makes for upstream.
func OwnedBy(s, upstream string) bool {
	return ValidName(s) && strings.HasSuffix(s, "_"+UpstreamSuffix(upstream))
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return len(s) > 0
}
