// Package jwa owns one rule shared by every signature mayfly checks (CI ID
// tokens in identity, DPoP proofs in dpop): which public key may verify
// which JWS algorithm (RFC 7518), RSA keys being at least MinRSABits.
//
// It never verifies a signature, never chooses the algorithms a caller
// accepts, and never sees a token.
package jwa

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"strings"
)

// MinRSABits is the smallest RSA modulus accepted for any signature.
const MinRSABits = 2048

// KeyFits reports whether key, a public key, can verify alg: an RSA key of
// at least MinRSABits for RS* and PS*, an ECDSA key on the curve ES256,
// ES384 or ES512 names, an Ed25519 key for EdDSA. Anything else (a
// symmetric key, a private key, an unknown algorithm) does not fit.
func KeyFits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return (strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")) && k.N.BitLen() >= MinRSABits
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}
