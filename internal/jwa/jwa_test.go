package jwa

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

func TestKeyFits(t *testing.T) {
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		key  any
		alg  string
		want bool
	}{
		{"RSA 2048 RS256", &rsa2048.PublicKey, "RS256", true},
		{"RSA 2048 PS512", &rsa2048.PublicKey, "PS512", true},
		{"RSA 1024 RS256", &rsa1024.PublicKey, "RS256", false},
		{"RSA for ES256", &rsa2048.PublicKey, "ES256", false},
		{"RSA for HS256", &rsa2048.PublicKey, "HS256", false},
		{"RSA private key", rsa2048, "RS256", false},
		{"P-256 ES256", &p256.PublicKey, "ES256", true},
		{"P-256 ES384", &p256.PublicKey, "ES384", false},
		{"P-384 ES384", &p384.PublicKey, "ES384", true},
		{"P-521 ES512", &p521.PublicKey, "ES512", true},
		{"P-521 ES256", &p521.PublicKey, "ES256", false},
		{"P-256 RS256", &p256.PublicKey, "RS256", false},
		{"Ed25519 EdDSA", edPub, "EdDSA", true},
		{"Ed25519 ES256", edPub, "ES256", false},
		{"Ed25519 private", edPriv, "EdDSA", false},
		{"symmetric", []byte("0123456789abcdef0123456789abcdef"), "HS256", false},
		{"nil", nil, "RS256", false},
		{"none", &rsa2048.PublicKey, "none", false},
	}
	for _, tt := range tests {
		if got := KeyFits(tt.key, tt.alg); got != tt.want {
			t.Errorf("%s: KeyFits = %v, want %v", tt.name, got, tt.want)
		}
	}
}
