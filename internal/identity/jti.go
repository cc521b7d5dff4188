package identity

import (
	"context"
	"fmt"
	"time"
)

// JTIStore remembers which ID-token jtis have been exchanged. UseJTI records
// (issuer, jti) until expires and reports whether it was new; it must be
// atomic, so that of two concurrent calls for one jti exactly one is fresh.
type JTIStore interface {
	UseJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error)
}

// ConsumeJTI records id's jti in s, so the ID token can be exchanged once.
// A token without jti is refused (GitHub and GitLab always send one); a jti
// seen before is a VerifyError with Check "replay". The jti is namespaced by
// the issuer URL and remembered until the token's expiry plus the skew, after
// which Verify refuses the token anyway.
func (v *Verifier) ConsumeJTI(ctx context.Context, s JTIStore, id *Identity) error {
	if id == nil {
		return needJTI("")
	}
	if err := needJTI(id.JTI); err != nil {
		return err
	}
	fresh, err := s.UseJTI(ctx, id.IssuerURL, id.JTI, id.Expiry.Add(v.opts.Skew))
	if err != nil {
		return fmt.Errorf("identity: record jti: %w", err)
	}
	if !fresh {
		return verr(CheckReplay, "this ID token (jti) was already exchanged")
	}
	return nil
}

// needJTI refuses a token without a jti, which could not be taken once.
// DecodeUnverified runs it too: `policy test` says what the exchange does.
func needJTI(jti string) error {
	if jti == "" {
		return verr(CheckMissingClaim, "jti is missing; the token cannot be exchanged once-only")
	}
	return nil
}
