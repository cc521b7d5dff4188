package identity

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayfly-sh/mayfly/internal/jwa"
)

const (
	maxKeysPerSet   = 100
	maxKeysNoKID    = 5
	maxRedirects    = 3
	discoverySuffix = "/.well-known/openid-configuration"
)

// keySource is one issuer's key cache. Reads are lock-free; fetches are
// serialised, joined by concurrent callers, and spaced by the cooldown.
type keySource struct {
	issuerURL string
	jwksURL   string // configured; "" = discovery

	set atomic.Pointer[keySet]

	mu          sync.Mutex
	lastAttempt time.Time     // guarded by mu
	inflight    chan struct{} // guarded by mu; closed when the fetch ends
	lastErr     error         // guarded by mu; result of the last fetch
}

type keySet struct {
	keys    []jose.JSONWebKey
	fetched time.Time
}

// keysFor returns the candidate keys for kid/alg, fetching the JWKS when the
// kid is unknown (at most once per cooldown) and refreshing stale keys in the
// background.
func (v *Verifier) keysFor(ctx context.Context, src *keySource, kid, alg string) ([]jose.JSONWebKey, error) {
	if ks := src.set.Load(); ks != nil {
		if keys := ks.find(kid, alg); len(keys) > 0 {
			if v.opts.Now().Sub(ks.fetched) >= v.opts.RefreshInterval {
				v.startFetch(src) // best effort; stale keys keep working
			}
			return keys, nil
		}
	}
	ch, fetchErr := v.startFetch(src)
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, verr(CheckKeysUnavailable, "waiting for the issuer's keys: %v", ctx.Err())
		}
		src.mu.Lock()
		fetchErr = src.lastErr
		src.mu.Unlock()
	}
	ks := src.set.Load()
	if ks == nil {
		if fetchErr == nil {
			fetchErr = errors.New("no keys fetched yet")
		}
		return nil, verr(CheckKeysUnavailable, "issuer keys unavailable: %v", fetchErr)
	}
	keys := ks.find(kid, alg)
	if len(keys) == 0 {
		src.mu.Lock()
		lastErr := src.lastErr
		src.mu.Unlock()
		if lastErr != nil {
			return nil, verr(CheckSignature, "no %s key with kid %s in the cached keys (refreshing them failed: %v)", alg, quote(kid), lastErr)
		}
		return nil, verr(CheckSignature, "no %s key with kid %s at the issuer", alg, quote(kid))
	}
	return keys, nil
}

// errCooldown is returned when a fetch is refused because one happened less
// than RefreshCooldown ago.
var errCooldown = errors.New("refetch refused within the refresh cooldown")

// startFetch starts a fetch unless one is running (then it returns that one's
// channel) or the cooldown forbids it (nil channel, errCooldown plus the last
// fetch error).
func (v *Verifier) startFetch(src *keySource) (<-chan struct{}, error) {
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.inflight != nil {
		return src.inflight, nil
	}
	now := v.opts.Now()
	if !src.lastAttempt.IsZero() && now.Sub(src.lastAttempt) < v.opts.RefreshCooldown {
		if src.lastErr != nil {
			return nil, fmt.Errorf("%w (last fetch: %v)", errCooldown, src.lastErr)
		}
		return nil, errCooldown
	}
	src.lastAttempt = now
	ch := make(chan struct{})
	src.inflight = ch
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), v.opts.FetchTimeout)
		defer cancel()
		keys, err := v.fetchKeys(ctx, src)
		if err == nil {
			src.set.Store(&keySet{keys: keys, fetched: v.opts.Now()})
		}
		src.mu.Lock()
		src.lastErr = err
		src.inflight = nil
		src.mu.Unlock()
		close(ch)
	}()
	return ch, nil
}

func (ks *keySet) find(kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for i := range ks.keys {
		k := &ks.keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if !jwa.KeyFits(k.Key, alg) {
			continue
		}
		out = append(out, *k)
		if kid == "" && len(out) >= maxKeysNoKID {
			break
		}
	}
	return out
}

type discoveryDoc struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// fetchKeys reads the issuer's JWKS (after discovery when no JWKS URL is
// configured) and keeps only usable public signing keys.
func (v *Verifier) fetchKeys(ctx context.Context, src *keySource) ([]jose.JSONWebKey, error) {
	jwksURL := src.jwksURL
	if jwksURL == "" {
		discURL := strings.TrimSuffix(src.issuerURL, "/") + discoverySuffix
		body, err := v.get(ctx, discURL)
		if err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		var doc discoveryDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, fmt.Errorf("discovery: document is not JSON: %w", err)
		}
		if doc.Issuer != src.issuerURL {
			return nil, fmt.Errorf("discovery: document names issuer %s, want %s", quote(doc.Issuer), quote(src.issuerURL))
		}
		if err := checkFetchURL(doc.JWKSURI); err != nil {
			return nil, fmt.Errorf("discovery: jwks_uri: %w", err)
		}
		// http on loopback is for a local test issuer, itself on http:
		// an https issuer's document does not get mayfly to fetch in the
		// clear from services on mayfly's own host.
		if strings.HasPrefix(src.issuerURL, "https://") && !strings.HasPrefix(strings.ToLower(doc.JWKSURI), "https://") {
			return nil, fmt.Errorf("discovery: jwks_uri: %s: an https issuer's keys must be fetched over https", quote(shownFetchURL(doc.JWKSURI)))
		}
		jwksURL = doc.JWKSURI
	}
	body, err := v.get(ctx, jwksURL)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return keys, nil
}

// parseJWKS keeps the usable keys of a JWKS: public, asymmetric, for
// signing, RSA of at least 2048 bits. Keys it cannot read are skipped, so one
// odd key does not take the issuer down; no usable key at all is an error.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		if len(keys) >= maxKeysPerSet {
			break
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if !k.IsPublic() {
			// A private key published (by mistake or not) is one anyone
			// who fetched this document can sign with: tokens under it
			// prove nothing. Symmetric (oct) keys are never used either.
			continue
		}
		if !k.Valid() {
			continue
		}
		if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < jwa.MinRSABits {
			continue
		}
		k.Certificates = nil
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signing key in the set")
	}
	return keys, nil
}

// get fetches a URL with the verifier's client: 200 only, at most
// MaxJWKSSize bytes. Its errors name the URL without its query (see
// shownFetchURL).
func (v *Verifier) get(ctx context.Context, u string) ([]byte, error) {
	shown := shownFetchURL(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", shown, hideURL(err))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", shown, hideURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("fetch %s: status %d", shown, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", shown, err)
	}
	if len(body) > MaxJWKSSize {
		return nil, fmt.Errorf("fetch %s: response larger than %d bytes", shown, MaxJWKSSize)
	}
	return body, nil
}

// hideURL makes a *url.Error in err's chain, which quotes its URL (the
// request's or a redirect's) whole, quote it as shownFetchURL does.
func hideURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = shownFetchURL(ue.URL)
	}
	return err
}

// shownFetchURL is a fetched URL as an error may quote it: without user
// info, query or fragment. A fetch error becomes the refusal of an exchange
// (answered to whoever sent a token naming the issuer, unauthenticated,
// and recorded in the audit log), and a JWKS URL's query may carry a
// credential (a storage SAS, a signed URL).
func shownFetchURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	hidden := u.RawQuery != "" || u.ForceQuery || u.Fragment != ""
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	if hidden {
		return u.String() + "?…"
	}
	return u.String()
}

// sameHostRedirect follows a redirect only to the same scheme and host.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return errors.New("too many redirects")
	}
	first := via[0].URL
	if req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("redirect to another host (%s) refused", req.URL.Host)
	}
	return nil
}

// checkFetchURL accepts https URLs, and http ones only on a loopback address
// (local testing).
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s is not an absolute URL", quote(shownFetchURL(raw)))
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%s: http is allowed only on a loopback address", quote(shownFetchURL(raw)))
	}
	return fmt.Errorf("%s: scheme must be https", quote(shownFetchURL(raw)))
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
