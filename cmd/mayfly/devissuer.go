package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/server"
)

func newDevIssuerCmd() *cobra.Command {
	var listen, alg, audience, serverURL, urlFile string
	var loginForm bool
	c := &cobra.Command{
		Use:   "dev-issuer [--listen 127.0.0.1:8700]",
		Short: "Run a local OIDC issuer of GitHub-Actions-shaped ID tokens, for trying pipelines (never production)",
		Long: "Run a local OIDC issuer that signs GitHub-Actions-shaped ID tokens with a key generated at\n" +
			"start, for trying mayfly pipelines on a laptop. It also signs humans in (authorization code\n" +
			"with PKCE, and the device flow) for trying admin_oidc. It listens on loopback addresses only.\n" +
			"NEVER use it in production: anyone who can reach it can mint tokens.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := devissuer.CheckListen(listen); err != nil {
				return usageErr("dev-issuer: %v", err)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return usageErr("dev-issuer: %v", err)
			}
			defer ln.Close()
			url := "http://" + ln.Addr().String()
			// The audience jobs ask for is the server's URL (login's
			// default): take it from --server or MAYFLY_ADDR, never guess
			// silently.
			if serverURL == "" {
				serverURL = os.Getenv(envAddr)
			}
			aud, note := audience, ""
			if aud == "" && serverURL != "" {
				if aud, err = client.NormalizeAddr(serverURL); err != nil {
					return usageErr("dev-issuer: --server: %v", err)
				}
			}
			if aud == "" {
				aud = "https://" + server.DefaultListen
				note = "\n(no --server given and MAYFLY_ADDR unset: the audience assumes a server on the default\n" +
					"address; pass --server URL when yours listens elsewhere)\n"
			}
			// Sign-in comes back to the server's own origin: the one named,
			// else a plain-HTTP test server on the default address.
			signIn, signInNote := "http://"+server.DefaultListen, "insecure_http, listening on "+server.DefaultListen
			if serverURL != "" {
				if signIn, err = client.NormalizeAddr(serverURL); err != nil {
					return usageErr("dev-issuer: --server: %v", err)
				}
				signInNote = signIn
				if strings.HasPrefix(signIn, "http://") {
					signInNote += ", insecure_http"
				}
			}
			iss, err := devissuer.New(devissuer.Options{URL: url, Algorithm: alg, Audience: aud, LoginForm: loginForm})
			if err != nil {
				return usageErr("%v", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, `mayfly dev-issuer: a local OIDC issuer for trying pipelines. NEVER use it in production.

issuer URL:  %[1]s   (%[2]s; key generated now, lost on exit)

In the policy:
  issuers:
    dev:
      url: %[1]s
      audience: %[3]s
      algorithms: [%[2]s]
%[6]s
Mint an ID token (any claim can be set in the query):
  curl -s '%[1]s/token?audience=%[3]s&repository=acme/app&ref=refs/heads/main&environment=production'

Or imitate GitHub Actions for mayfly login / mayfly exec:
  export ACTIONS_ID_TOKEN_REQUEST_URL='%[4]s'
  export ACTIONS_ID_TOKEN_REQUEST_TOKEN='%[5]s'
  export MAYFLY_AUDIENCE='%[3]s'

Human sign-in (SSO) on a test server (%[9]s): in its config
  admin_oidc:
    issuer: %[1]s
    client_id: mayfly
    redirect_url: %[8]s/ui/callback
    roles: {admin: [mayfly-admins], operator: [mayfly-operators], auditor: [mayfly-auditors]}
then open %[8]s/ui/login or run mayfly auth login. It signs in dev@example.com
(group mayfly-admins)%[7]s.

Serving until interrupted.
`, url, iss.Algorithm(), aud, iss.RequestURL(), iss.RequestToken(), note, formNote(loginForm), signIn, signInNote)
			if urlFile != "" {
				if err := os.WriteFile(urlFile, []byte(url+"\n"), 0o600); err != nil {
					return usageErr("dev-issuer: %v", err)
				}
			}
			srv := &http.Server{
				Handler:           iss.Handler(),
				ReadHeaderTimeout: 10 * time.Second,
				ReadTimeout:       30 * time.Second,
				WriteTimeout:      30 * time.Second,
				IdleTimeout:       2 * time.Minute,
				MaxHeaderBytes:    64 << 10,
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				if !errors.Is(err, http.ErrServerClosed) {
					return usageErr("dev-issuer: %v", err)
				}
			case <-cmd.Context().Done():
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8700", "loopback address to listen on")
	c.Flags().StringVar(&alg, "alg", "RS256", "signing algorithm: RS256 or ES256")
	c.Flags().StringVar(&serverURL, "server", "", "URL of the mayfly server the tokens are for: the audience (default $"+envAddr+")")
	c.Flags().StringVar(&audience, "audience", "", "audience for the policy and for tokens that ask for none (default: the server URL)")
	c.Flags().StringVar(&urlFile, "url-file", "", "write the issuer URL to this file once listening (for scripts)")
	c.Flags().BoolVar(&loginForm, "login-form", false, "at the authorization endpoint, show a form choosing the email and groups instead of approving at once")
	return c
}

func formNote(form bool) string {
	if form {
		return " or whoever the form (--login-form) names"
	}
	return " at once (--login-form shows a form choosing the email and groups)"
}
