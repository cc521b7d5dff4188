package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/job"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Environment variables the API clients read (SPEC section 1).
const (
	envAddr   = "MAYFLY_ADDR"
	envCACert = "MAYFLY_CACERT"
	envToken  = "MAYFLY_TOKEN"
)

// maxJSONResponse bounds a JSON answer read by the CLI.
const maxJSONResponse = 16 << 20

// clientFlags are the connection flags of every command that talks to a
// server.
type clientFlags struct {
	addr   string
	cacert string
}

// addClientFlags adds --addr and --cacert to c and its sub-commands.
func addClientFlags(c *cobra.Command) *clientFlags {
	f := &clientFlags{}
	c.PersistentFlags().StringVar(&f.addr, "addr", "", "server URL (default $"+envAddr+")")
	c.PersistentFlags().StringVar(&f.cacert, "cacert", "", "PEM file of the CA to trust for the server (default $"+envCACert+")")
	return f
}

// apiClient is the CLI's client of the server's HTTP API.
type apiClient struct {
	addr  string // normalised, no trailing "/"
	http  *http.Client
	admin string // admin token, "" for job-side calls
}

// newAPIClient builds a client from the flags and the environment. With
// needAdmin, MAYFLY_TOKEN must hold an admin token.
func newAPIClient(f *clientFlags, needAdmin bool) (*apiClient, error) {
	addr := f.addr
	if addr == "" {
		addr = os.Getenv(envAddr)
	}
	addr, err := job.NormalizeAddr(addr)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	cafile := f.cacert
	if cafile == "" {
		cafile = os.Getenv(envCACert)
	}
	hc, err := newHTTPClient(cafile)
	if err != nil {
		return nil, err
	}
	c := &apiClient{addr: addr, http: hc}
	if needAdmin {
		t := strings.TrimSpace(os.Getenv(envToken))
		if t == "" {
			return nil, usageErr("%s is not set: admin commands need an admin token (mfya_…)", envToken)
		}
		if k, err := token.Parse(t); err != nil || k != token.Admin {
			return nil, usageErr("%s does not hold a well-formed admin token (mfya_…)", envToken)
		}
		c.admin = t
	}
	return c, nil
}

// newHTTPClient returns a client with timeouts and TLS 1.2 or later,
// trusting only the CA in cafile when one is given (else the system roots).
// It follows no redirect: an admin token is never replayed elsewhere.
func newHTTPClient(cafile string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cafile != "" {
		pem, err := os.ReadFile(cafile)
		if err != nil {
			return nil, usageErr("reading CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErr("CA file %s holds no PEM certificate", cafile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// do sends one request to path (with query, relative to addr) and returns
// the response when it is 2xx; otherwise it returns the mapped error.
// what names the action for error messages.
func (c *apiClient) do(ctx context.Context, what, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, body)
	if err != nil {
		return nil, usageErr("%s: %v", what, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "mayfly-cli")
	if c.admin != "" {
		req.Header.Set("Authorization", "Bearer "+c.admin)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, connErr(what, c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, apiErr(what, job.ReadError(resp))
	}
	return resp, nil
}

// connErr describes a failure to reach the server (exit 2).
func connErr(what, addr string, err error) error {
	if errors.Is(err, context.Canceled) {
		return usageErr("%s: interrupted", what)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ca x509.UnknownAuthorityError
	if errors.As(err, &ca) {
		return usageErr("%s: cannot reach %s: the server's certificate is not trusted (set %s to the CA file, e.g. DIR/ca.pem)", what, addr, envCACert)
	}
	return usageErr("%s: cannot reach %s: %s", what, addr, job.OneLine(err.Error(), 300))
}

// apiErr maps a server refusal to an exit code: a 4xx is the command's
// negative answer (exit 1); 429 and 5xx are environment problems (exit 2).
func apiErr(what string, e *job.Error) error {
	hint := ""
	switch e.Status {
	case http.StatusUnauthorized:
		hint = " (is " + envToken + " a live admin token?)"
	case http.StatusForbidden:
		hint = " (role too weak, or not from an admin network)"
	}
	if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
		return usageErr("%s: %v", what, e)
	}
	return negative("%s: %v%s", what, e, hint)
}

// getJSON, sendJSON: JSON round trips.
func (c *apiClient) getJSON(ctx context.Context, what, path string, out any) error {
	resp, err := c.do(ctx, what, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeJSON(what, resp.Body, out)
}

func (c *apiClient) sendJSON(ctx context.Context, what, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return usageErr("%s: %v", what, err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, what, method, path, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeJSON(what, resp.Body, out)
}

// getRaw returns a whole (bounded) body.
func (c *apiClient) getRaw(ctx context.Context, what, path string, max int64) ([]byte, http.Header, error) {
	resp, err := c.do(ctx, what, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, nil, usageErr("%s: reading response: %v", what, err)
	}
	if int64(len(b)) > max {
		return nil, nil, usageErr("%s: response larger than %d bytes", what, max)
	}
	return b, resp.Header, nil
}

func decodeJSON(what string, r io.Reader, out any) error {
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(r, maxJSONResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(r, maxJSONResponse)).Decode(out); err != nil {
		return usageErr("%s: unexpected response from the server: %v", what, err)
	}
	return nil
}

// printJSON writes v indented, for --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		for i := range r {
			r[i] = job.OneLine(r[i], 200)
			if r[i] == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// shortTime renders an RFC 3339 time from the API compactly; "" stays "".
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// pathEscape escapes one path segment of the API (a name).
func pathEscape(s string) string { return url.PathEscape(s) }
