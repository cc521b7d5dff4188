package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/job"
)

// jobFlags are the flags of the commands that exchange an ID token.
type jobFlags struct {
	client   *clientFlags
	grants   []string
	idFile   string
	idEnv    string
	audience string
	ttl      time.Duration
	dpopKey  string
	// showClaims: on a refusal, print the ID token's claims to stderr
	// first (login; exec keeps its error to one line among CMD's output).
	showClaims bool
}

func addJobFlags(c *cobra.Command) *jobFlags {
	f := &jobFlags{client: &clientFlags{}}
	f.client.register(c, false)
	fl := c.Flags()
	fl.StringSliceVar(&f.grants, "grant", nil, "grant(s) to ask for: NAME[,NAME…] (repeatable)")
	fl.StringVar(&f.idFile, "id-token-file", "", "read the CI ID token from this file")
	fl.StringVar(&f.idEnv, "id-token-env", "", "read the CI ID token from this variable (GitLab id_tokens; default "+job.EnvIDToken+")")
	fl.StringVar(&f.audience, "audience", "", "audience to ask GitHub Actions for (default $"+job.EnvAudience+", then $"+envAddr+")")
	fl.DurationVar(&f.ttl, "ttl", 0, "token lifetime to ask for (default: the grant's ttl)")
	fl.StringVar(&f.dpopKey, "dpop-key", "", "bind the token to this PEM private key (created, P-256, mode 0600, if missing; refused if other users may read it); gateway calls then need DPoP proofs")
	return f
}

// exchanged is the outcome of an exchange.
type exchanged struct {
	client  *client.Client
	resp    *apitype.TokenResponse
	raw     []byte
	idToken string
	dpopKey crypto.Signer
	// sentAt is when the exchange that issued the token was sent: its
	// life (resp.ExpiresIn) is counted from no earlier than this.
	sentAt time.Time
}

// exchange finds the ID token and trades it for a job token.
func (f *jobFlags) exchange(ctx context.Context, stderr io.Writer) (*exchanged, error) {
	var grants []string
	for _, g := range f.grants {
		grants = append(grants, strings.FieldsFunc(g, func(r rune) bool { return r == ',' || r == ' ' })...)
	}
	if len(grants) == 0 {
		return nil, usageErr("--grant NAME is required")
	}
	if f.ttl < 0 {
		return nil, usageErr("--ttl must be positive")
	}
	jc, err := newAPIClient(f.client, false)
	if err != nil {
		return nil, err
	}
	addr := jc.Addr()
	var key crypto.Signer
	if f.dpopKey != "" {
		var created bool
		key, created, err = job.LoadDPoPKey(f.dpopKey, true)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if created {
			fmt.Fprintf(stderr, "mayfly: created DPoP key %s\n", f.dpopKey)
		}
	}
	aud := f.audience
	if aud == "" && os.Getenv(job.EnvAudience) == "" {
		aud = addr
	}
	idTok, _, err := job.FindIDToken(ctx, job.IDTokenOptions{File: f.idFile, EnvVar: f.idEnv, Audience: aud})
	if err != nil {
		return nil, usageErr("%v", err)
	}
	resp, raw, sentAt, err := exchangeRetrying(ctx, jc, client.ExchangeRequest{IDToken: idTok, Grants: grants, TTL: f.ttl, DPoPKey: key}, stderr)
	if err != nil {
		if f.showClaims && refused(err) {
			printIDTokenClaims(stderr, idTok)
		}
		return nil, jobErr(err)
	}
	ex := &exchanged{client: jc, resp: resp, raw: raw, idToken: idTok, dpopKey: key, sentAt: sentAt}
	if key != nil && !strings.EqualFold(resp.TokenType, "DPoP") {
		// The server binds a token to the key of the exchange's DPoP proof
		// and says so (RFC 9449 section 5); a bearer token means the proof
		// did not arrive (a proxy that drops the header). Handed out, it
		// would be taken for bound while anyone who copies it can use it.
		revokeQuietly(ctx, "token exchange", ex, stderr)
		return nil, usageErr("token exchange: the server issued a bearer token (token_type %q), not one bound to --dpop-key: does a proxy in front of it drop the DPoP header? The token was revoked",
			client.OneLine(resp.TokenType, 32))
	}
	return ex, nil
}

// exchangeBudget bounds the time spent trying an exchange again.
const exchangeBudget = time.Minute

// exchangeRetrying is Exchange, tried again while the server answers 429
// or 503 (rate limited, the issuer's keys or the audit log unavailable:
// nothing was done, so the ID token is not spent), starting at 1s, for up
// to exchangeBudget (retryTemporary). A dropped connection is not retried:
// the exchange may have been done, and the token's jti would then be
// refused. sentAt is when the last attempt was sent, from which the
// token's life counts.
func exchangeRetrying(ctx context.Context, jc *client.Client, req client.ExchangeRequest, stderr io.Writer) (resp *apitype.TokenResponse, raw []byte, sentAt time.Time, err error) {
	temporary := func(err error) bool {
		var e *client.Error
		return errors.As(err, &e) && (e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable)
	}
	err = retryTemporary(ctx, time.Now().Add(exchangeBudget), time.Second, temporary, func() error {
		sentAt = time.Now()
		var err error
		resp, raw, err = jc.Exchange(ctx, req)
		return err
	}, func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "mayfly: token exchange: %s; trying again in %s\n", client.OneLine(err.Error(), 200), wait)
	})
	return resp, raw, sentAt, err
}

// jobErr maps an exchange failure: a refusal (400 invalid_grant,
// invalid_scope, 401, 403) is the command's negative answer (exit 1);
// anything else is an environment problem (exit 2).
func jobErr(err error) error {
	var je *client.Error
	if errors.As(err, &je) && je.Refused() {
		return negative("token exchange refused: %s", strings.TrimPrefix(je.Error(), "token exchange: "))
	}
	return clientErr(err)
}

func newLoginCmd() *cobra.Command {
	var loginFmt *outputFormat
	var jf *jobFlags
	c := &cobra.Command{
		Use:   "login --grant NAME[,NAME…] [--id-token-file F | --id-token-env VAR] [--format token|env|json|github-env]",
		Short: "Exchange the CI job's ID token for a short-lived mayfly job token and print it",
		Long: "Find the job's OIDC ID token (GitHub Actions' request URL, GitLab's id_tokens variable\n" +
			"MAYFLY_ID_TOKEN, or --id-token-file / --id-token-env), exchange it at $MAYFLY_ADDR/v1/token for\n" +
			"the grants asked, and print the job token:\n" +
			"  token       the bare token (default)\n" +
			"  env         MAYFLY_TOKEN=… and MAYFLY_GATEWAY=$MAYFLY_ADDR/gw lines, quoted for sh where needed\n" +
			"  json        the server's response\n" +
			"  github-env  ::add-mask:: for the runner, then both variables appended to $GITHUB_ENV\n" +
			"Prefer `mayfly exec`, which also masks the token in output and revokes it when done.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := loginFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if format == "github-env" && os.Getenv(job.EnvGitHubEnv) == "" {
				return usageErr("login: --format github-env needs $GITHUB_ENV (GitHub Actions)")
			}
			ex, err := jf.exchange(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			err = job.Write(job.Output{Stdout: cmd.OutOrStdout(), GitHubEnv: os.Getenv(job.EnvGitHubEnv)}, format, ex.client.Addr(), ex.resp, ex.raw)
			if err != nil {
				// Nobody will use a token that could not be handed over.
				revokeQuietly(cmd.Context(), "login", ex, cmd.ErrOrStderr())
				return usageErr("login: %v", err)
			}
			return nil
		},
	}
	jf = addJobFlags(c)
	jf.showClaims = true
	loginFmt = addFormatFlag(c, "token", job.Formats...)
	return c
}
