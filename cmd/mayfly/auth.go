package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/keyfile"
)

// Sessions of humans signed in with mayfly auth login are kept, per
// server, in the user's config dir (mode 0600): the other admin commands
// use the one for their server when MAYFLY_TOKEN is not set.

type savedSession struct {
	SessionToken string    `json:"session_token"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Session      string    `json:"session"`
	ExpiresAt    time.Time `json:"expires_at"`
}

type sessionFile struct {
	Sessions map[string]savedSession `json:"sessions"` // by server URL
}

// sessionPath is where sessions are kept: $MAYFLY_SESSION_FILE, or
// mayfly/sessions.json in the user's config dir.
func sessionPath() (string, error) {
	if p := os.Getenv("MAYFLY_SESSION_FILE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config dir for the session: %w (set MAYFLY_SESSION_FILE)", err)
	}
	return filepath.Join(dir, "mayfly", "sessions.json"), nil
}

func readSessions() (sessionFile, string, error) {
	p, err := sessionPath()
	if err != nil {
		return sessionFile{}, "", err
	}
	f := sessionFile{Sessions: map[string]savedSession{}}
	b, err := readOwnerOnly(p)
	if errors.Is(err, os.ErrNotExist) {
		return f, p, nil
	}
	if err != nil {
		return f, p, err
	}
	if json.Unmarshal(b, &f) != nil {
		return sessionFile{Sessions: map[string]savedSession{}}, p, fmt.Errorf("%s is not a mayfly session file: remove it and sign in again", p)
	}
	if f.Sessions == nil {
		f.Sessions = map[string]savedSession{}
	}
	return f, p, nil
}

func writeSessions(f sessionFile, p string) error {
	now := time.Now()
	for k, s := range f.Sessions {
		if !now.Before(s.ExpiresAt) {
			delete(f.Sessions, k)
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("saving the session: %w", err)
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := replaceFile(p, b); err != nil {
		return fmt.Errorf("saving the session: %w", err)
	}
	return nil
}

// readOwnerOnly reads the session file p (at most 1 MiB), refusing one
// another local user may read: its sessions are admin credentials, as
// good as leaked; and, on Unix, one another user owns (keyfile.ReadOwn):
// its sessions would be theirs, planted for us to act as.
func readOwnerOnly(p string) ([]byte, error) {
	b, err := keyfile.ReadOwn(p, 1<<20)
	if errors.Is(err, keyfile.ErrFileTooLarge) {
		return nil, fmt.Errorf("%s is not a mayfly session file: remove it and sign in again", p)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the admin session file: %w", err)
	}
	return b, nil
}

// sessionFor returns the saved, unexpired session token for the server
// at addr (normalised), or "". A session file it may not use (another
// user may read it, or owns it) is an error: otherwise the command would
// go on without the session and fail for a reason that hides this one.
func sessionFor(addr string) (string, error) {
	f, _, err := readSessions()
	if err != nil {
		if errors.Is(err, keyfile.ErrReadableByOthers) || errors.Is(err, keyfile.ErrNotOwned) {
			return "", err
		}
		return "", nil
	}
	s, ok := f.Sessions[addr]
	if !ok || !time.Now().Before(s.ExpiresAt) || !client.IsSessionToken(s.SessionToken) {
		return "", nil
	}
	return s.SessionToken, nil
}

func newAuthCmd() *cobra.Command {
	auth := &cobra.Command{
		Use:   "auth",
		Short: "Sign in to a server with your identity provider (admin_oidc), sign out, say who you are",
	}
	cf := addClientFlags(auth)
	var device, noBrowser bool
	var timeout time.Duration
	login := &cobra.Command{
		Use:   "login [--device] [--no-browser]",
		Short: "Sign in through the server's identity provider; admin commands then use the session",
		Long: "Sign in through the server's identity provider (its admin_oidc). By default a browser opens the\n" +
			"server's sign-in page and comes back to a listener on 127.0.0.1 (PKCE); with --device (or over\n" +
			"SSH, when the provider offers it) you approve a code on any device instead. The session token is\n" +
			"kept in your config dir (mode 0600) and used by admin commands for this server while\n" +
			"MAYFLY_TOKEN is unset; it lasts the server's admin_session_ttl (default 8h), and ends sooner once\n" +
			"unused for its admin_session_idle (default 1h).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, false)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			conf, err := c.AuthConfig(ctx)
			var ae *client.Error
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				return negative("auth login: the server at %s does not sign people in (no admin_oidc in its config): use an admin token (%s)", c.Addr(), envToken)
			}
			if err != nil {
				return clientErr(err)
			}
			if conf.ProviderDown {
				return usageErr("auth login: the server cannot reach its identity provider right now; try again shortly")
			}
			if device && !conf.Device {
				return negative("auth login --device: the server's identity provider offers no device flow: run mayfly auth login without --device")
			}
			var tok *apitype.SessionToken
			// Over SSH a browser on this machine is no use: the device flow,
			// where the provider has it, unless --device=false says otherwise.
			useDevice := device || (conf.Device && os.Getenv("SSH_CONNECTION") != "" && !cmd.Flags().Changed("device"))
			if useDevice {
				tok, err = deviceLogin(ctx, cmd, c)
			} else {
				tok, err = loopbackLogin(ctx, cmd, c, noBrowser)
			}
			if err != nil {
				return clientErr(err)
			}
			f, p, err := readSessions()
			if err != nil {
				f = sessionFile{Sessions: map[string]savedSession{}}
			}
			f.Sessions[c.Addr()] = savedSession{SessionToken: tok.SessionToken, Name: tok.Name, Role: tok.Role, Session: tok.Session, ExpiresAt: tok.ExpiresAt}
			if err := writeSessions(f, p); err != nil {
				return usageErr("auth login: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed in to %s as %s (role %s) until %s\n", c.Addr(), client.OneLine(tok.Name, 200), client.OneLine(tok.Role, 32), shortTime(&tok.ExpiresAt))
			return nil
		},
	}
	login.Flags().BoolVar(&device, "device", false, "sign in with a code approved on any device (the provider's device flow)")
	login.Flags().BoolVar(&noBrowser, "no-browser", false, "print the sign-in URL instead of opening a browser")
	login.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the sign-in")

	logout := &cobra.Command{
		Use:   "logout",
		Short: "End this server's session and forget it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, false)
			if err != nil {
				return err
			}
			f, p, err := readSessions()
			if err != nil {
				return usageErr("auth logout: %v", err)
			}
			s, ok := f.Sessions[c.Addr()]
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "not signed in to %s\n", c.Addr())
				return nil
			}
			delete(f.Sessions, c.Addr())
			// Forget it first: a server that cannot be reached must not
			// leave the token on disk.
			if err := writeSessions(f, p); err != nil {
				return usageErr("auth logout: %v", err)
			}
			if _, err := c.SignOut(cmd.Context(), s.SessionToken); err != nil {
				return clientErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed out of %s\n", c.Addr())
			return nil
		},
	}
	var whoFmt *outputFormat
	whoami := &cobra.Command{
		Use:   "whoami",
		Short: "Say who the admin credential in use is (MAYFLY_TOKEN or the session) and its role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := whoFmt.resolve(cmd)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (role %s)\n", client.OneLine(out.Name, 200), client.OneLine(out.Role, 32))
			return nil
		},
	}
	whoFmt = addFormatFlag(whoami, "text", "text", "json")
	auth.AddCommand(login, logout, whoami)
	return auth
}

func randomURLSafe(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// loopbackLogin: a listener on 127.0.0.1, the browser sent to the
// server's sign-in page with our PKCE challenge and state, the one-time
// code it brings back traded with the verifier.
func loopbackLogin(ctx context.Context, cmd *cobra.Command, c *client.Client, noBrowser bool) (*apitype.SessionToken, error) {
	verifier, err := randomURLSafe(32)
	if err != nil {
		return nil, err
	}
	state, err := randomURLSafe(24)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("auth login: listening on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	codes := make(chan string, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/callback" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 || q.Get("code") == "" || len(q.Get("code")) > 256 {
			http.Error(w, "not this sign-in", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'")
		io.WriteString(w, "<!doctype html><title>mayfly</title><p>Signed in. You can close this tab and return to the terminal.</p>")
		select {
		case codes <- q.Get("code"):
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	u := c.SignInURL(ln.Addr().(*net.TCPAddr).Port, challenge, state)
	fmt.Fprintf(cmd.ErrOrStderr(), "Sign in at:\n  %s\n", u)
	if !noBrowser {
		if err := openBrowser(u); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "(could not open a browser: %v; open the URL yourself)\n", err)
		}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Waiting for the sign-in to finish (the page asks to sign in the command line on port %d)…\n", ln.Addr().(*net.TCPAddr).Port)
	select {
	case code := <-codes:
		return c.CLIToken(ctx, code, verifier)
	case <-ctx.Done():
		return nil, fmt.Errorf("auth login: the sign-in did not finish in time (%w)", ctx.Err())
	}
}

func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

// deviceLogin: the server starts the provider's device flow; the user
// approves the code anywhere; we poll the server until they have.
func deviceLogin(ctx context.Context, cmd *cobra.Command, c *client.Client) (*apitype.SessionToken, error) {
	d, err := c.DeviceStart(ctx)
	if err != nil {
		return nil, err
	}
	// The provider's text, through the server: one line of plain text on
	// the terminal, never an escape sequence of its choosing.
	fmt.Fprintf(cmd.ErrOrStderr(), "To sign in, open %s and enter the code %s\n", client.OneLine(d.VerificationURI, 2048), client.OneLine(d.UserCode, 64))
	if d.VerificationURIComplete != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "(or open %s)\n", client.OneLine(d.VerificationURIComplete, 2048))
	}
	interval := time.Duration(max(d.Interval, 1)) * time.Second
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("auth login: the code was not approved in time (%w)", ctx.Err())
		case <-time.After(interval):
		}
		tok, err := c.DeviceToken(ctx, d.DeviceCode)
		var ae *client.Error
		switch {
		case err == nil:
			return tok, nil
		case errors.As(err, &ae) && ae.Code == "authorization_pending":
		case errors.As(err, &ae) && (ae.Code == "slow_down" || ae.Status == http.StatusTooManyRequests):
			// The server bounds polls per address (admin_rate): slower.
			interval += 5*time.Second + ae.RetryAfter
		default:
			return nil, err
		}
	}
}
