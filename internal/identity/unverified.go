package identity

import (
	"slices"
	"time"
)

// Unverified is what an ID token says about itself, read WITHOUT checking
// its signature, issuer, audience or lifetime. It explains (mayfly policy
// test, a refused mayfly login); nothing may be decided on it.
type Unverified struct {
	Algorithm string
	KeyID     string
	Issuer    string // the iss claim (a url)
	Subject   string
	Audience  []string
	AZP       string    // the azp claim, "" when absent
	Expiry    time.Time // zero when exp is missing or not a date
	// Claims holds every top-level claim as a string, as Identity.Claims
	// does after verification.
	Claims map[string]string

	// Why the exchange would refuse the token's shape whoever signed it
	// (nil: it would not); IssuerOf answers them where Verify checks them.
	issErr, claimsErr, jtiErr error
}

// DecodeUnverified reads raw's header and claims without verifying
// anything (see Unverified). raw is limited to DefaultMaxTokenSize; the
// errors say what is malformed and never quote the token.
func DecodeUnverified(raw string) (*Unverified, error) {
	jws, err := parseJWS(raw, DefaultMaxTokenSize)
	if err != nil {
		return nil, err
	}
	claims, err := decodeClaims(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return nil, err
	}
	hdr := jws.Signatures[0].Header
	u := &Unverified{Algorithm: hdr.Algorithm, KeyID: hdr.KeyID, Claims: make(map[string]string, len(claims))}
	for k, c := range claims {
		if s, ok := claimString(c); ok {
			u.Claims[k] = s
		}
	}
	// What it says is shown even when Verify would refuse its shape.
	u.Issuer, _ = claims["iss"].(string)
	u.Subject, _ = claims["sub"].(string)
	u.AZP, _ = claims["azp"].(string)
	if aud, err := audience(claims["aud"]); err == nil {
		u.Audience = aud
	}
	if exp, ok := numericDate(claims["exp"]); ok {
		u.Expiry = exp
	}
	_, u.issErr = issuerClaim(claims)
	var r *registered
	if r, u.claimsErr = readClaims(claims); u.claimsErr == nil {
		u.jtiErr = needJTI(r.jti)
	}
	return u, nil
}

// IssuerOf names the issuer of cfgs (taken in the order given, as
// SetIssuers takes them) that Verify would check u against, by Verify's
// rule: its url is u's iss, u's aud holds its audience (and, with several
// audiences, azp is it unless it allows that), its algorithms include u's
// alg. Like SetIssuers, it ignores a config whose url repeats an earlier
// one's with another JWKSURL. It verifies nothing but what the exchange
// checks of the claims' format (Verify, and a jti for ConsumeJTI); a
// *VerifyError says why no issuer fits, or why the token is refused
// whatever its signature, in Verify's order.
func (u *Unverified) IssuerOf(cfgs []IssuerConfig) (string, error) {
	if u.issErr != nil {
		return "", u.issErr
	}
	var entries []issuerEntry
	jwksURL := ""
	for _, c := range cfgs {
		if c.URL != u.Issuer {
			continue
		}
		if len(entries) == 0 {
			jwksURL = c.JWKSURL
		} else if c.JWKSURL != jwksURL {
			continue
		}
		entries = append(entries, issuerEntry{name: c.Name, audience: c.Audience, algs: effectiveAlgs(c.Algorithms), multiAuds: c.AllowMultipleAudiences})
	}
	if len(entries) == 0 {
		return "", verr(CheckIssuer, "issuer %s is not trusted", quote(u.Issuer))
	}
	found := false
	for _, e := range entries {
		if slices.Contains(e.algs, u.Algorithm) {
			found = true
		}
	}
	if !found {
		return "", verr(CheckAlgorithm, "algorithm %s is not accepted for issuer %s", quote(u.Algorithm), quote(u.Issuer))
	}
	if u.claimsErr != nil {
		return "", u.claimsErr
	}
	e, err := pickEntry(entries, u.Algorithm, u.Audience, u.AZP)
	if err != nil {
		return "", err
	}
	if u.jtiErr != nil {
		return "", u.jtiErr
	}
	return e.name, nil
}
