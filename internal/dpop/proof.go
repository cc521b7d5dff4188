package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// NewProof makes a DPoP proof for a request, as a client does (the job side,
// the demo, tests). key is an *ecdsa.PrivateKey (P-256/384/521 → ES*), an
// ed25519.PrivateKey (EdDSA) or an *rsa.PrivateKey (PS256). accessToken ""
// leaves out ath (token exchange).
func NewProof(key crypto.Signer, method, requestURL, accessToken string, now time.Time) (string, error) {
	alg, err := algFor(key)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType(TokenType)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("dpop: new signer: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("dpop: jti: %w", err)
	}
	claims := map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(jti),
		"htm": method,
		"htu": requestURL,
		"iat": now.Unix(),
	}
	if accessToken != "" {
		claims["ath"] = AccessTokenHash(accessToken)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("dpop: claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dpop: sign: %w", err)
	}
	return jws.CompactSerialize()
}

func algFor(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	case *rsa.PrivateKey:
		return jose.PS256, nil
	}
	return "", errors.New("dpop: unsupported key type")
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of a public key, base64url
// without padding: what a token bound to that key records.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k := jose.JSONWebKey{Key: pub}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("dpop: thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
