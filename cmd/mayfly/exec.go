package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/job"
	"github.com/mayfly-sh/mayfly/internal/mask"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Exit codes of `mayfly exec` beyond CMD's own, as env(1), timeout(1) and
// `docker run` use them: a caller can tell mayfly's failure from CMD's.
const (
	exitExecFailed    = 125 // mayfly exec itself failed; CMD did not run
	exitCannotExecute = 126 // CMD was found but could not be started
	exitNotFound      = 127 // CMD was not found
)

// execFailed turns a failure of exec's own (usage, ID token, exchange,
// masker) into exit 125, keeping its message.
func execFailed(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var ee *exitError
	if errors.As(err, &ee) {
		msg = ee.msg
	}
	if !strings.HasPrefix(msg, "exec") {
		msg = "exec: " + msg
	}
	return &exitError{code: exitExecFailed, msg: msg}
}

// forwardedSignals are passed on to the child of `mayfly exec`.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

func newExecCmd() *cobra.Command {
	var maskEnv []string
	var noRenew bool
	var jf *jobFlags
	c := &cobra.Command{
		Use:   "exec --grant NAME… [ID-token flags] -- CMD ARGS…",
		Short: "Run a command with a job token in its environment, its output masked, the token revoked after",
		Long: "Exchange the job's ID token, run CMD with MAYFLY_TOKEN and MAYFLY_GATEWAY=<addr>/gw in its\n" +
			"environment, pass its standard output and error through the masker (the job token, the ID\n" +
			"token and the values of --mask-env variables), forward SIGINT/SIGTERM/SIGHUP/SIGQUIT to it\n" +
			"once (outside a terminal's foreground, to CMD's own process group; in it, Ctrl-C and Ctrl-\\\n" +
			"reach CMD from the terminal), renew the token while CMD runs (up to the grant's max_ttl),\n" +
			"and revoke the token when CMD ends.\n\n" +
			"Exit status:\n" +
			"  CMD's own    when CMD ran (0-255)\n" +
			"  128+N        CMD died of signal N\n" +
			"  125          mayfly exec itself failed and CMD did not run: bad usage, no ID token,\n" +
			"               the exchange refused, the server unreachable (the message says which)\n" +
			"  126          CMD was found but could not be started\n" +
			"  127          CMD was not found",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return execFailed(usageErr("exec: no command given: mayfly exec --grant NAME -- CMD ARGS…"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := runExec(cmd, args, jf, maskEnv, noRenew)
			if err != nil {
				return err
			}
			if code != 0 {
				return silentExit(code)
			}
			return nil
		},
	}
	jf = addJobFlags(c)
	c.Flags().StringSliceVar(&maskEnv, "mask-env", nil, "also mask the values of these environment variables (repeatable)")
	c.Flags().BoolVar(&noRenew, "no-renew", false, "do not renew the token while the command runs")
	c.Flags().SetInterspersed(false) // flags after CMD belong to CMD
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return execFailed(usageErr("%s", withCommand(c, err.Error())))
	})
	return c
}

// runExec is `mayfly exec`: CMD's exit code, or an error with exec's own
// exit code (125, 126, 127).
func runExec(cmd *cobra.Command, args []string, jf *jobFlags, maskEnv []string, noRenew bool) (int, error) {
	// Check what is to be masked before anything is issued.
	var secrets [][]byte
	for _, name := range maskEnv {
		v := os.Getenv(name)
		if v == "" {
			continue
		}
		if len(v) < mask.MinSecretLen {
			return 0, execFailed(usageErr("exec: --mask-env %s: the value is shorter than %d bytes and cannot be masked safely", name, mask.MinSecretLen))
		}
		secrets = append(secrets, []byte(v))
	}
	// From here until the token is revoked no signal may kill mayfly
	// (SIGHUP and SIGQUIT would): each goes to CMD, once it has started.
	// Nor may SIGPIPE: when our reader goes away (`mayfly exec … | head`)
	// the write fails with EPIPE instead, CMD's output stops being read
	// (CMD gets the broken pipe as it would without mayfly) and the token
	// is still revoked. Notify, not Ignore: CMD must not inherit SIG_IGN.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)

	ex, err := jf.exchange(cmd.Context(), cmd.ErrOrStderr())
	if err != nil {
		return 0, execFailed(err)
	}
	secrets = append(secrets, []byte(ex.resp.AccessToken), []byte(ex.idToken))
	// Every credential minted for the job is masked too (SPEC section 9).
	for _, c := range ex.resp.UpstreamCredentials {
		for _, v := range c.Secrets() {
			secrets = append(secrets, []byte(v))
		}
	}
	creds, err := job.CredentialEnv(ex.resp.UpstreamCredentials)
	if err != nil {
		revokeQuietly(cmd.Context(), "exec", ex, cmd.ErrOrStderr())
		return 0, execFailed(usageErr("exec: %v", err))
	}
	m, err := mask.NewMatcher(secrets)
	if err != nil {
		revokeQuietly(cmd.Context(), "exec", ex, cmd.ErrOrStderr())
		return 0, execFailed(usageErr("exec: masker: %v", err))
	}
	env := childEnv(os.Environ(), ex, jf.dpopKey, creds)
	code, err := runMasked(m, args, env, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), sigs, ex, !noRenew)
	revokeQuietly(cmd.Context(), "exec", ex, cmd.ErrOrStderr())
	return code, err
}

// childEnv is the parent's environment with MAYFLY_TOKEN, MAYFLY_GATEWAY
// (and MAYFLY_DPOP_KEY when bound) set for the job, and the variables of
// the credentials delivered to it (GH_TOKEN, PG…, DATABASE_URL).
func childEnv(parent []string, ex *exchanged, dpopKey string, creds [][2]string) []string {
	set := map[string]string{
		envToken:         ex.resp.AccessToken,
		"MAYFLY_GATEWAY": ex.client.GatewayURL(),
	}
	for _, kv := range creds {
		set[kv[0]] = kv[1]
	}
	if dpopKey != "" {
		if abs, err := filepath.Abs(dpopKey); err == nil {
			dpopKey = abs
		}
		set["MAYFLY_DPOP_KEY"] = dpopKey
	}
	out := make([]string, 0, len(parent)+len(set))
	for _, kv := range parent {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out
}

// runMasked runs args with env, its output through m, forwarding the
// signals of sigs to it, renewing the token while it runs. It returns CMD's
// exit code (128+signal when it died of one), or an error when it could not
// be started.
func runMasked(m *mask.Matcher, args, env []string, stdin io.Reader, stdout, stderr io.Writer, sigs <-chan os.Signal, ex *exchanged, renew bool) (int, error) {
	outW := m.NewWriter(stdout, mask.Options{})
	errW := m.NewWriter(stderr, mask.Options{})
	defer outW.Close()
	defer errW.Close()

	// CMD's parent-death signal (Linux) follows the thread that starts it:
	// keep this goroutine on that thread until CMD has ended.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	group := newExecGroup()
	child := exec.Command(args[0], args[1:]...)
	child.SysProcAttr = group.attr()
	child.Env = env
	child.Stdin = stdin
	child.Stdout = outW
	child.Stderr = errW
	// A grandchild left holding the pipes must not keep us (and the token)
	// alive forever.
	child.WaitDelay = 5 * time.Second

	// A signal that came before CMD existed did not reach it: pass it on.
	var early []os.Signal
	for drained := false; !drained; {
		select {
		case s := <-sigs:
			early = append(early, s)
		default:
			drained = true
		}
	}
	if err := child.Start(); err != nil {
		code := exitCannotExecute
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return 0, &exitError{code: code, msg: fmt.Sprintf("exec: %s: %v", args[0], err)}
	}
	for _, s := range early {
		_ = group.send(child.Process, s)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case s := <-sigs:
				if !group.reachedCMD(s) {
					_ = group.send(child.Process, s)
				}
			case <-done:
				return
			}
		}
	}()
	if renew {
		wg.Add(1)
		go func() {
			defer wg.Done()
			renewLoop(done, ex, stderr, systemClock())
		}()
	}
	err := child.Wait()
	close(done)
	wg.Wait()
	_ = outW.Flush()
	_ = errW.Flush()

	st := child.ProcessState
	if st == nil {
		return 0, &exitError{code: exitCannotExecute, msg: fmt.Sprintf("exec: %s: %v", args[0], err)}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	if errors.Is(err, exec.ErrWaitDelay) && st.ExitCode() == 0 {
		return 0, nil
	}
	return st.ExitCode(), nil
}

// renewClock is the time renewLoop reads and waits on (tests drive
// their own).
type renewClock struct {
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// systemClock is the system's.
func systemClock() renewClock { return renewClock{now: time.Now, after: time.After} }

// renewLoop renews the token once a third of its life is left, until
// done, or until renewal stops extending it (max_ttl reached, revoked). A
// life (expires_in) is counted from when the request that got it was
// sent, the earliest the server can have counted it from: time the
// exchange or a renewal took, or spent before CMD started, is not added
// to it. A key-bound token's renewals carry a proof of its key.
func renewLoop(done <-chan struct{}, ex *exchanged, stderr io.Writer, clk renewClock) {
	life := time.Duration(ex.resp.ExpiresIn) * time.Second
	expiry := ex.sentAt.Add(life)
	// Too little life left to be worth a renewal: 15s, or a third of a
	// shorter token's.
	minLeft := min(15*time.Second, life/3)
	// CMD's end also ends a renewal in flight or waiting to be retried.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for life > minLeft {
		select {
		case <-done:
			return
		case <-clk.after(expiry.Add(-life / 3).Sub(clk.now())):
		}
		// A temporary failure (a restart, a rolling deploy) is tried
		// again while the token lives: giving up would let it expire
		// under CMD.
		var sent time.Time
		var resp *apitype.RenewResponse
		err := retryTemporary(ctx, time.Now().Add(expiry.Sub(clk.now())), time.Second, temporaryFailure, func() error {
			sent = clk.now()
			actx, acancel := context.WithTimeout(ctx, 30*time.Second)
			defer acancel()
			var err error
			resp, err = ex.client.Renew(actx, ex.resp.AccessToken, ex.dpopKey)
			return err
		}, nil)
		if ctx.Err() != nil {
			return // CMD ended
		}
		if err != nil {
			fmt.Fprintf(stderr, "mayfly: exec: renewing the job token failed (%s); it expires in about %s\n",
				client.OneLine(err.Error(), 200), max(expiry.Sub(clk.now()), 0).Round(time.Second))
			return
		}
		next := time.Duration(resp.ExpiresIn) * time.Second
		if !sent.Add(next).After(expiry.Add(time.Second)) {
			return // no longer extended: max_ttl reached
		}
		life, expiry = next, sent.Add(next)
	}
}

// revokeQuietly revokes the job token even if ctx was cancelled by a
// signal, retrying as revokeRetrying does; a failure is reported on stderr
// as op's, never with the token.
func revokeQuietly(ctx context.Context, op string, ex *exchanged, stderr io.Writer) {
	if err := revokeRetrying(ctx, ex.client, ex.resp.AccessToken); err != nil {
		fmt.Fprintf(stderr, "mayfly: %s: could not revoke job token %s (lease %s): %s; it expires by itself\n",
			op, token.Hint(ex.resp.AccessToken), client.OneLine(ex.resp.LeaseID, 64), client.OneLine(err.Error(), 200))
	}
}

// revokeBudget bounds the time spent retrying a revocation.
const revokeBudget = 30 * time.Second

// revokeRetrying revokes tok, trying again while the failure is
// temporary (429, 5xx, the server unreachable): a token left alive keeps
// every credential minted for it alive too. It starts waiting 0.5s and
// gives up when the wait would end past revokeBudget (retryTemporary).
// ctx's cancellation does not stop it.
func revokeRetrying(ctx context.Context, c *client.Client, tok string) error {
	deadline := time.Now().Add(revokeBudget)
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	return retryTemporary(ctx, deadline, 500*time.Millisecond, temporaryFailure, func() error {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		return c.Revoke(actx, tok)
	}, nil)
}

// temporaryFailure reports whether a renewal or a revocation may succeed
// when tried again: 429, 5xx, the server unreachable.
func temporaryFailure(err error) bool {
	var e *client.Error
	var ce *client.ConnError
	return errors.As(err, &e) && (e.Status == http.StatusTooManyRequests || e.Status >= 500) || errors.As(err, &ce)
}

// retryTemporary calls try until it succeeds or fails for good
// (temporary says no), waiting between tries as the server's Retry-After
// asks, else first doubling up to 8s; it gives up, with the last error,
// when the next wait would end past deadline or ctx ends. waiting, when
// set, is told each wait before it starts.
func retryTemporary(ctx context.Context, deadline time.Time, first time.Duration, temporary func(error) bool, try func() error, waiting func(err error, wait time.Duration)) error {
	backoff := first
	for {
		err := try()
		if err == nil || !temporary(err) {
			return err
		}
		wait := backoff
		var e *client.Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			wait = e.RetryAfter
		}
		backoff = min(2*backoff, 8*time.Second)
		if time.Until(deadline) < wait {
			return err
		}
		if waiting != nil {
			waiting(err, wait)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
