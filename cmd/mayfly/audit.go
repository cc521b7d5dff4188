package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/server"
)

// auditPageSize is how many entries one GET /v1/audit/entries asks for.
const auditPageSize = 1000

// auditPageCutBytes is how large a page shorter than asked for must be
// to be read on from rather than taken for the log's end: the server cuts
// a page before the entry that would take it past 8 MiB
// (auditlog.MaxPageBytes), so such a page holds more than 8 MiB less one
// entry (64 KiB). A smaller short page is the end: a server cannot keep a
// client reading forever with one line more on each.
const auditPageCutBytes = 1 << 20

// pageBytes is the bytes of a page's entries.
func pageBytes(es [][]byte) int {
	n := 0
	for _, e := range es {
		n += len(e)
	}
	return n
}

func newAuditCmd() *cobra.Command {
	au := &cobra.Command{
		Use:   "audit",
		Short: "Verify, follow, export and prove entries of the tamper-evident audit log; print its key",
	}
	cf := addClientFlags(au)
	au.AddCommand(newAuditVerifyCmd(cf), newAuditTailCmd(cf), newAuditExportCmd(cf), newAuditProveCmd(cf), newAuditKeyCmd(cf))
	return au
}

// verifyState is what a verifier remembers between runs: the key it trusts
// and the last tree it verified. A later log must still contain that tree.
type verifyState struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
	Root string `json:"root"` // base64
	Time string `json:"time,omitempty"`
}

func (s *verifyState) head() (*audit.TreeHead, error) {
	if s == nil || (s.Size == 0 && s.Root == "") {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s.Root)
	if err != nil || len(b) != 32 || s.Size < 0 {
		return nil, errors.New("malformed tree head")
	}
	th := &audit.TreeHead{Size: s.Size}
	copy(th.Root[:], b)
	return th, nil
}

// loadState reads a state file; a missing file is no state.
func loadState(path string) (*verifyState, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, usageErr("audit: reading state %s: %v", path, err)
	}
	var s verifyState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, usageErr("audit: state file %s is corrupt (%v); move it away to start over", path, err)
	}
	if _, err := s.head(); err != nil {
		return nil, usageErr("audit: state file %s: %v; move it away to start over", path, err)
	}
	return &s, nil
}

// saveState writes the state atomically (temporary file, then rename).
func saveState(path string, s *verifyState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("audit: state: %w", err)
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := replaceFile(path, append(b, '\n')); err != nil {
		return fmt.Errorf("audit: writing state %s: %w", path, err)
	}
	return nil
}

// replaceFile replaces path with b, whole or not at all: written to a new
// file of a random name beside it (O_EXCL, mode 0600: at a fixed name, a
// file or link another user planted in a shared directory would receive
// what is written), synced, then renamed over path.
func replaceFile(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// defaultStatePath is $XDG_STATE_HOME/mayfly/verify-<host>.state (or
// ~/.local/state/…).
func defaultStatePath(addr string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", usageErr("audit: no state directory (set XDG_STATE_HOME, or pass --state FILE or --no-state)")
		}
		base = filepath.Join(home, ".local", "state")
	}
	host := addr
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		host = u.Host + u.Path
	}
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, host)
	return filepath.Join(base, "mayfly", "verify-"+safe+".state"), nil
}

// readKeyFlag takes --key as a file holding the verifier key, or the key
// itself.
func readKeyFlag(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	// The key itself first: its name (mayfly.local/audit) and base64
	// hold slashes, so it looks like a path.
	if audit.CheckVerifierKey(v) == nil {
		return v, nil
	}
	if b, err := os.ReadFile(v); err == nil {
		k := strings.TrimSpace(string(b))
		if err := audit.CheckVerifierKey(k); err != nil {
			return "", usageErr("audit: --key file %s holds no note verifier key (NAME+HASH+KEY)", v)
		}
		return k, nil
	}
	return "", usageErr("audit: --key %q is neither a readable file nor a note verifier key (NAME+HASH+KEY)", v)
}

// namedKeyMismatch is the refusal of a checkpoint that the verifier key
// named with --key does not verify while the server says it signs with
// another: a log signed by a key the user did not name is not theirs to
// trust, whatever it holds. nil when the server's key is the named one
// (the checkpoint itself is then at fault, which the caller reports).
func namedKeyMismatch(ctx context.Context, op string, c auditClient, named string) error {
	srv, err := c.AuditKey(ctx)
	if err != nil {
		return clientErr(err)
	}
	if srv == named {
		return nil
	}
	return negative("%s: the server signs its checkpoints with verifier key %s, not the --key given (%s): trust nothing it serves unless you expected its key", op, srv, named)
}

type verifyReport struct {
	OK             bool   `json:"ok"`
	Size           int64  `json:"size"`
	Root           string `json:"root"`
	CheckpointSize int64  `json:"checkpoint_size"`
	FirstBad       int64  `json:"first_bad"`
	Reason         string `json:"reason,omitempty"`
	// Unproven entries follow the checkpoint, written lately: no signature
	// covers them yet, so "ok" does not vouch for them.
	Unproven int64 `json:"unproven"`
}

func newAuditVerifyCmd(cf *clientFlags) *cobra.Command {
	var dataDir, pgDSN, keyFlag, statePath string
	var noState bool
	var verifyFmt *outputFormat
	c := &cobra.Command{
		Use:   "verify (--data-dir DIR [--postgres DSN] | --addr URL)",
		Short: "Recompute the Merkle tree and check it against the latest signed checkpoint",
		Long: "Recompute the audit log's Merkle tree from its entries and check every entry, the latest\n" +
			"signed checkpoint and the tree verified last time (kept in a state file, so that a rollback or\n" +
			"a rewritten history is caught). Offline with --data-dir (the server may be running; the store\n" +
			"is opened read-only and never migrated: a schema this mayfly cannot read is refused), or\n" +
			"remotely with --addr / MAYFLY_ADDR and an auditor token in MAYFLY_TOKEN. The first remote run\n" +
			"pins the server's verifier key unless --key gives it.\n" +
			"Only what a signed checkpoint covers is intact. Entries after the latest checkpoint are\n" +
			"reported unproven while the first of them is less than 60 s old (a running server signs every\n" +
			"500 ms); older, verification fails at the checkpoint's size (checkpoints deleted, or the server\n" +
			"stopped signing or crashed: starting it signs them).\n" +
			"Exit 0 intact (and any unproven entries fresh), 1 tampered or unsigned (naming the first bad\n" +
			"index), 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := verifyFmt.resolve(cmd)
			if err != nil {
				return err
			}
			asJSON := format == "json"
			ctx := cmd.Context()
			key, err := readKeyFlag(keyFlag)
			if err != nil {
				return err
			}
			var res *audit.VerifyResult
			var state *verifyState
			var cons error
			if dataDir != "" {
				if cf.addr != "" {
					return usageErr("audit verify: give --data-dir or --addr, not both")
				}
				if statePath == "" && !noState {
					statePath = datadir.Dir(dataDir).VerifyState()
				}
				if noState {
					statePath = ""
				}
				if state, err = loadState(statePath); err != nil {
					return err
				}
				if res, key, err = verifyOffline(ctx, dataDir, pgDSN, key, state); err != nil {
					return err
				}
			} else {
				if err := needServerOrDataDir("audit verify", cf); err != nil {
					return err
				}
				ac, err := newAPIClient(cf, true)
				if err != nil {
					return err
				}
				c := auditClient{ac}
				if statePath == "" && !noState {
					if statePath, err = defaultStatePath(c.Addr()); err != nil {
						return err
					}
				}
				if noState {
					statePath = ""
				}
				if state, err = loadState(statePath); err != nil {
					return err
				}
				if res, key, cons, err = verifyRemote(ctx, c, key, state, statePath); err != nil {
					return err
				}
			}
			rep := verifyReport{OK: res.OK(), Size: res.Size, Root: base64.StdEncoding.EncodeToString(res.Root[:]),
				CheckpointSize: res.Checkpoint.Size, FirstBad: res.FirstBad, Reason: res.Reason, Unproven: res.Unproven}
			if rep.OK && cons != nil {
				rep.OK, rep.FirstBad, rep.Reason = false, state.Size, cons.Error()
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			}
			if !rep.OK {
				return negative("audit log verification failed at index %d: %s", rep.FirstBad, rep.Reason)
			}
			if !asJSON && rep.Unproven > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "audit log intact up to the signed checkpoint at %d, root %s; "+
					"%d newer entries are unproven: no signed checkpoint covers them yet (the first written %s ago; verify again to cover them)\n",
					rep.CheckpointSize, base64.StdEncoding.EncodeToString(res.Checkpoint.Root[:]), rep.Unproven,
					time.Since(res.UnprovenSince).Round(time.Millisecond))
			} else if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "audit log intact: %d entries, signed checkpoint at %d, root %s\n",
					rep.Size, rep.CheckpointSize, base64.StdEncoding.EncodeToString(res.Checkpoint.Root[:]))
			}
			if statePath != "" && res.Checkpoint.Size > 0 {
				ns := &verifyState{Key: key, Size: res.Checkpoint.Size,
					Root: base64.StdEncoding.EncodeToString(res.Checkpoint.Root[:]), Time: time.Now().UTC().Format(time.RFC3339)}
				if err := saveState(statePath, ns); err != nil {
					return usageErr("%v", err)
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "", "verify offline from this data directory")
	f.StringVar(&pgDSN, "postgres", "", "with --data-dir: the PostgreSQL DSN the server uses (default $MAYFLY_POSTGRES)")
	f.StringVar(&keyFlag, "key", "", "the note verifier key to trust (a file or the key); default DIR/audit.pub, or the server's pinned on first use")
	f.StringVar(&statePath, "state", "", "state file remembering the last verified tree (default DIR/audit-verify.state, or $XDG_STATE_HOME/mayfly/verify-HOST.state)")
	f.BoolVar(&noState, "no-state", false, "neither read nor write a state file")
	verifyFmt = addFormatFlag(c, "text", "text", "json")
	return c
}

func newAuditKeyCmd(cf *clientFlags) *cobra.Command {
	var dataDir, statePath string
	var noState bool
	c := &cobra.Command{
		Use:   "key (--data-dir DIR | --addr URL)",
		Short: "Print the log's verifier key and check it against the one audit verify pinned",
		Long: "Print the audit log's note verifier key: the server's (GET /v1/audit/key, with --addr /\n" +
			"MAYFLY_ADDR and a token in MAYFLY_TOKEN) or DIR/audit.pub with --data-dir, to compare with the\n" +
			"one the web console shows. When the state file of `audit verify` (the same default, or --state)\n" +
			"pins a key, say whether it is the same.\n" +
			"Exit 0 printed (and the same as pinned), 1 it differs from the pinned key, 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var key string
			if dataDir != "" {
				if cf.addr != "" {
					return usageErr("audit key: give --data-dir or --addr, not both")
				}
				dir := datadir.Dir(dataDir)
				if err := dir.Require(); err != nil {
					return usageErr("audit key: %v", err)
				}
				b, err := os.ReadFile(dir.AuditPub())
				if err != nil {
					return usageErr("audit key: reading the verifier key: %v", err)
				}
				key = strings.TrimSpace(string(b))
				if statePath == "" {
					statePath = dir.VerifyState()
				}
			} else {
				if err := needServerOrDataDir("audit key", cf); err != nil {
					return err
				}
				c, err := newAuditClient(cf)
				if err != nil {
					return err
				}
				if key, err = c.AuditKey(ctx); err != nil {
					return clientErr(err)
				}
				if statePath == "" {
					// No state directory only means nothing pinned to compare.
					statePath, _ = defaultStatePath(c.Addr())
				}
			}
			if noState {
				statePath = ""
			}
			st, err := loadState(statePath)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, key)
			if st == nil || st.Key == "" {
				return nil
			}
			if st.Key != key {
				return negative("audit key: it differs from the key pinned in %s (%s), so audit verify refuses it: if the server was re-initialised, verify its new log with a fresh state file (--state NEW_FILE, or remove %s)", statePath, st.Key, statePath)
			}
			fmt.Fprintf(out, "same as the key pinned in %s\n", statePath)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "", "read the key offline from DIR/audit.pub")
	f.StringVar(&statePath, "state", "", "state file of audit verify holding the pinned key (default DIR/audit-verify.state, or $XDG_STATE_HOME/mayfly/verify-HOST.state)")
	f.BoolVar(&noState, "no-state", false, "do not compare with a pinned key")
	return c
}

func verifyOffline(ctx context.Context, dataDir, dsn, key string, state *verifyState) (*audit.VerifyResult, string, error) {
	dir := datadir.Dir(dataDir)
	if err := dir.Require(); err != nil {
		return nil, "", usageErr("audit verify: %v", err)
	}
	if key == "" {
		b, err := os.ReadFile(dir.AuditPub())
		if err != nil {
			return nil, "", usageErr("audit verify: reading the verifier key: %v", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if state != nil && state.Key != "" && state.Key != key {
		return nil, "", negative("audit verify: the verifier key differs from the one trusted last time (state file)")
	}
	if dsn == "" {
		dsn = os.Getenv("MAYFLY_POSTGRES")
	}
	if dsn == "" {
		// The store refuses a missing file too (it opens it read-only);
		// here the error can say why it may be missing: a data dir whose
		// server uses PostgreSQL has none.
		if _, err := os.Stat(dir.Database()); err != nil {
			return nil, "", usageErr("audit verify: %s is missing (%v); if the server uses PostgreSQL, pass --postgres DSN or set MAYFLY_POSTGRES", dir.Database(), errors.Unwrap(err))
		}
	}
	seen, _ := state.head()
	// Reading every row leaves the driver's copy of each entry as
	// garbage while the live heap stays a few pages: collecting at 5x
	// rather than 2x the live heap saves ~10 % of the CPU (1,000,000
	// entries: 2.1 vs 2.35 s) for some tens of MB more.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	res, err := server.VerifyAudit(ctx, dataDir, dsn, key, audit.VerifyOptions{Seen: seen})
	if err != nil {
		return nil, "", usageErr("audit verify: %v", err)
	}
	return res, key, nil
}

// verifyRemote fetches the key (unless given or pinned), the checkpoint and
// every entry it covers, and recomputes the tree. cons reports a consistency
// proof from the server that does not check out.
func verifyRemote(ctx context.Context, c auditClient, key string, state *verifyState, statePath string) (res *audit.VerifyResult, usedKey string, cons, err error) {
	named := key != ""
	if !named {
		srvKey, err := c.AuditKey(ctx)
		if err != nil {
			return nil, "", nil, clientErr(err)
		}
		key = srvKey
		if state != nil && state.Key != "" && state.Key != srvKey {
			return nil, "", nil, keyChanged("audit verify", statePath)
		}
	}
	cp, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return nil, "", nil, clientErr(err)
	}
	seen, _ := state.head()
	want := int64(0)
	cpSize, cpRoot, cpErr := audit.ParseCheckpoint(cp, key)
	if cpErr == nil {
		want = cpSize
	} else if named {
		if err := namedKeyMismatch(ctx, "audit verify", c, key); err != nil {
			return nil, "", nil, err
		}
	}
	if seen != nil && seen.Size > want {
		want = seen.Size
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(c.streamEntries(ctx, pw, 0, want)) }()
	res, err = audit.VerifyStream(ctx, pr, cp, key, audit.VerifyOptions{Seen: seen})
	pr.Close()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, "", nil, err
		}
		return nil, "", nil, usageErr("audit verify: %v", err)
	}
	// The tree check only says from where the log can no longer be trusted;
	// inclusion proofs against the signed checkpoint find the first entry
	// actually served altered (bounded, one request per entry).
	if !res.OK() && cpErr == nil && res.FirstBad >= 0 && res.FirstBad < cpSize {
		if k, ok := locateBadEntry(ctx, c, res.FirstBad, cpSize, cpRoot); ok {
			res.Reason = fmt.Sprintf("entry %d does not match the signed checkpoint of size %d (%s)", k, cpSize, res.Reason)
			res.FirstBad = k
		}
	}
	// The server's own consistency proof must agree with what was recomputed.
	if res.OK() && seen != nil && cpErr == nil && cpSize > seen.Size && seen.Size > 0 {
		b, err := c.AuditConsistencyProof(ctx, seen.Size, cpSize)
		if err != nil {
			return nil, "", nil, clientErr(err)
		}
		proof, err := audit.UnmarshalProof(b)
		if err == nil {
			err = audit.VerifyConsistency(seen.Size, seen.Root, cpSize, cpRoot, proof)
		}
		if err != nil {
			cons = fmt.Errorf("the server's consistency proof from %d to %d does not verify: %v", seen.Size, cpSize, err)
		}
	}
	return res, key, cons, nil
}

// keyChanged is the refusal of a server whose verifier key is not the one
// the state file pins. --key alone does not get past it: the state also
// pins the old log's tree, which a new log does not extend.
func keyChanged(op, statePath string) error {
	return negative("%s: the server's verifier key changed since the last verification (pinned in %s): if the server was re-initialised, its log is a new one: verify it with a fresh state file (--state NEW_FILE, or remove %s); otherwise trust nothing it serves", op, statePath, statePath)
}

// provePinned checks that the signed checkpoint (size, root) and the tree a
// state file pins (seen; nil: none) are one history, with a consistency
// proof from the server: the checkpoint extends the pinned tree, or, for an
// older one kept in a file (kept), is a prefix of it. A served checkpoint
// smaller than the pinned tree is a rollback.
func provePinned(ctx context.Context, c auditClient, seen *audit.TreeHead, size int64, root [32]byte, kept bool) error {
	if seen == nil {
		return nil
	}
	oldSize, oldRoot, newSize, newRoot := seen.Size, seen.Root, size, root
	if size < seen.Size {
		if !kept {
			return negative("audit prove: the server's checkpoint (size %d) is older than the tree verified before (size %d, state file): log rolled back", size, seen.Size)
		}
		oldSize, oldRoot, newSize, newRoot = size, root, seen.Size, seen.Root
	}
	proof := [][32]byte{}
	if oldSize > 0 && oldSize < newSize {
		b, err := c.AuditConsistencyProof(ctx, oldSize, newSize)
		if err != nil {
			return clientErr(err)
		}
		if proof, err = audit.UnmarshalProof(b); err != nil {
			return negative("audit prove: malformed consistency proof from the server: %v", err)
		}
	}
	if err := audit.VerifyConsistency(oldSize, oldRoot, newSize, newRoot, proof); err != nil {
		return negative("audit prove: the checkpoint (size %d) and the tree verified before (size %d, state file) are not one history: %v", size, seen.Size, err)
	}
	return nil
}

// maxLocate bounds the inclusion proofs locateBadEntry asks for.
const maxLocate = 1000

// locateBadEntry returns the first index in [from, size) whose served entry
// is not proven in the signed tree (size, root), looking at most maxLocate
// entries.
func locateBadEntry(ctx context.Context, c auditClient, from, size int64, root [32]byte) (int64, bool) {
	for i := from; i < size && i < from+maxLocate; {
		es, err := c.auditPage(ctx, i, int(min(auditPageSize, size-i)))
		if err != nil || len(es) == 0 {
			return 0, false
		}
		for _, e := range es {
			b, err := c.AuditInclusionProof(ctx, i, size)
			if err != nil {
				return 0, false
			}
			proof, err := audit.UnmarshalProof(b)
			if err != nil || audit.VerifyInclusion(i, size, e, root, proof) != nil {
				return i, true
			}
			i++
			if i >= from+maxLocate {
				return 0, false
			}
		}
	}
	return 0, false
}

// auditClient adds the CLI's paging of audit entries to the API client.
type auditClient struct{ *client.Client }

// AuditKey is the server's verifier key, refused unless it is a note
// verifier key of printable characters: it is printed and pinned, and a
// note key's name may hold any character but space and '+', so a hostile
// server's could drive the terminal (ESC sequences) of whoever checks it.
func (c auditClient) AuditKey(ctx context.Context) (string, error) {
	k, err := c.Client.AuditKey(ctx)
	if err != nil {
		return "", err
	}
	if audit.CheckVerifierKey(k) != nil || strings.ContainsFunc(k, unicode.IsControl) {
		return "", negative("audit: the server's verifier key is not a note verifier key (NAME+HASH+KEY) of printable characters: trust nothing it serves")
	}
	return k, nil
}

// needServerOrDataDir is the refusal of a command that reads a server or,
// offline, a data dir, given neither: it names both ways.
func needServerOrDataDir(op string, cf *clientFlags) error {
	if cf.addr == "" && strings.TrimSpace(os.Getenv(envAddr)) == "" {
		return usageErr("%s: give a server (set %s or pass --addr) or, offline, --data-dir DIR", op, envAddr)
	}
	return nil
}

func newAuditClient(cf *clientFlags) (auditClient, error) {
	c, err := newAPIClient(cf, true)
	return auditClient{c}, err
}

// auditPage returns up to limit entries' exact bytes from start.
func (c auditClient) auditPage(ctx context.Context, start int64, limit int) ([][]byte, error) {
	b, err := c.AuditEntries(ctx, start, limit, audit.MaxLineSize)
	if err != nil {
		return nil, clientErr(err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > limit {
		return nil, usageErr("audit: the server returned %d entries for a page of %d", len(lines), limit)
	}
	return lines, nil
}

// streamEntries writes entries [start, end) as NDJSON (end < 0: until the
// log ends). It stops early when the server has no more: a page shorter
// than asked for, unless the server may have cut it for its bytes
// (auditPageCutBytes).
func (c auditClient) streamEntries(ctx context.Context, w io.Writer, start, end int64) error {
	for pos := start; end < 0 || pos < end; {
		limit := int64(auditPageSize)
		if end >= 0 && end-pos < limit {
			limit = end - pos
		}
		es, err := c.auditPage(ctx, pos, int(limit))
		if err != nil {
			return err
		}
		for _, e := range es {
			if _, err := w.Write(append(e, '\n')); err != nil {
				return err
			}
		}
		pos += int64(len(es))
		if int64(len(es)) < limit && pageBytes(es) < auditPageCutBytes {
			return nil
		}
	}
	return nil
}

// checkpointSize reads the tree size of a checkpoint without checking its
// signature (for positioning only).
func checkpointSize(cp []byte) (int64, error) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 2 {
		return 0, errors.New("malformed checkpoint")
	}
	return strconv.ParseInt(lines[1], 10, 64)
}

func newAuditTailCmd(cf *clientFlags) *cobra.Command {
	var n int64
	var follow bool
	var interval time.Duration
	c := &cobra.Command{
		Use:   "tail [-n N] [-f]",
		Short: "Print the last entries (NDJSON); with -f keep following new ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 0 || interval < 100*time.Millisecond {
				return usageErr("audit tail: -n must be >= 0 and --interval at least 100ms")
			}
			c, err := newAuditClient(cf)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cp, err := c.AuditCheckpoint(ctx)
			if err != nil {
				return clientErr(err)
			}
			size, err := checkpointSize(cp)
			if err != nil {
				return usageErr("audit tail: %v", err)
			}
			pos := max(0, size-n)
			out := cmd.OutOrStdout()
			for {
				es, err := c.auditPage(ctx, pos, auditPageSize)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				for _, e := range es {
					if _, err := fmt.Fprintln(out, shownEntry(e)); err != nil {
						return usageErr("audit tail: %v", err)
					}
				}
				pos += int64(len(es))
				if len(es) == auditPageSize || pageBytes(es) >= auditPageCutBytes {
					continue
				}
				if !follow {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	c.Flags().Int64VarP(&n, "lines", "n", 10, "how many of the latest entries to print first")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep polling for new entries until interrupted")
	c.Flags().DurationVar(&interval, "interval", time.Second, "polling interval with -f")
	return c
}

func newAuditExportCmd(cf *clientFlags) *cobra.Command {
	var since, until int64
	c := &cobra.Command{
		Use:   "export [--since N] [--until M]",
		Short: "Write entries as NDJSON (their exact bytes, one per line) to standard output",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("until") {
				until = -1 // the end of the log
			}
			if since < 0 || (until >= 0 && until < since) {
				return usageErr("audit export: --since must be >= 0 and --until >= --since")
			}
			c, err := newAuditClient(cf)
			if err != nil {
				return err
			}
			bw := bufio.NewWriterSize(cmd.OutOrStdout(), 256<<10)
			if err := c.streamEntries(cmd.Context(), bw, since, until); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return usageErr("audit export: %v", err)
			}
			if err := bw.Flush(); err != nil {
				return usageErr("audit export: %v", err)
			}
			return nil
		},
	}
	c.Flags().Int64Var(&since, "since", 0, "first entry `N` to export")
	c.Flags().Int64Var(&until, "until", 0, "stop before entry `N` (default: the end of the log)")
	return c
}

type proveReport struct {
	Verified bool            `json:"verified"`
	Index    int64           `json:"index"`
	Size     int64           `json:"size"`
	Root     string          `json:"root"`
	Proof    []string        `json:"proof"`
	Entry    json.RawMessage `json:"entry"`
}

func newAuditProveCmd(cf *clientFlags) *cobra.Command {
	var index, size int64
	var cpFile, keyFlag, statePath string
	var proveFmt *outputFormat
	c := &cobra.Command{
		Use:   "prove --index N [--size S] [--checkpoint FILE]",
		Short: "Prove that an entry is in the signed tree (inclusion proof, checked locally)",
		Long: "Fetch the entry, an inclusion proof and the latest signed checkpoint (or use --checkpoint FILE,\n" +
			"a signed checkpoint kept earlier), and check the proof locally. The verifier key is --key, the\n" +
			"one pinned by `audit verify` in the state file, or else the server's. When the state file pins a\n" +
			"tree, the checkpoint must extend it (a consistency proof from the server, checked here; a served\n" +
			"checkpoint smaller than it is refused), and the state then advances to the checkpoint.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := proveFmt.resolve(cmd)
			if err != nil {
				return err
			}
			asJSON := format == "json"
			if !cmd.Flags().Changed("index") || index < 0 {
				return usageErr("audit prove: --index N is required (N >= 0)")
			}
			if !cmd.Flags().Changed("size") {
				size = -1 // the checkpoint's
			} else if size < 0 {
				return usageErr("audit prove: --size S must be >= 0 (or left out: the checkpoint's)")
			}
			ctx := cmd.Context()
			c, err := newAuditClient(cf)
			if err != nil {
				return err
			}
			key, err := readKeyFlag(keyFlag)
			if err != nil {
				return err
			}
			if statePath == "" {
				statePath, _ = defaultStatePath(c.Addr())
			}
			st, err := loadState(statePath)
			if err != nil {
				return err
			}
			if key == "" && st != nil && st.Key != "" {
				key = st.Key
			} else if key == "" {
				if key, err = c.AuditKey(ctx); err != nil {
					return clientErr(err)
				}
			}
			seen, _ := st.head() // loadState checked it
			var cp []byte
			if cpFile != "" {
				if cp, err = os.ReadFile(cpFile); err != nil {
					return usageErr("audit prove: %v", err)
				}
			} else if cp, err = c.AuditCheckpoint(ctx); err != nil {
				return clientErr(err)
			}
			cpSize, root, err := audit.ParseCheckpoint(cp, key)
			if err != nil && keyFlag == "" && st != nil && st.Key == key {
				// Signed by another key than the pinned one: say so if the
				// server's own key is another, as after a new init.
				if srvKey, kerr := c.AuditKey(ctx); kerr == nil && srvKey != key {
					return keyChanged("audit prove", statePath)
				}
			}
			if err != nil && keyFlag != "" && cpFile == "" {
				if err := namedKeyMismatch(ctx, "audit prove", c, key); err != nil {
					return err
				}
			}
			if err != nil {
				return negative("audit prove: the checkpoint does not verify: %v", err)
			}
			if size >= 0 && size != cpSize {
				return usageErr("audit prove: the checkpoint at hand has size %d, not %d: pass --checkpoint FILE with a signed checkpoint of size %d", cpSize, size, size)
			}
			if err := provePinned(ctx, c, seen, cpSize, root, cpFile != ""); err != nil {
				return err
			}
			if index >= cpSize {
				return negative("audit prove: entry %d is not covered by the signed checkpoint (size %d) yet", index, cpSize)
			}
			b, err := c.AuditInclusionProof(ctx, index, cpSize)
			if err != nil {
				return clientErr(err)
			}
			proof, err := audit.UnmarshalProof(b)
			if err != nil {
				return usageErr("audit prove: malformed proof from the server: %v", err)
			}
			es, err := c.auditPage(ctx, index, 1)
			if err != nil {
				return err
			}
			if len(es) != 1 {
				return negative("audit prove: the server has no entry %d", index)
			}
			rep := proveReport{Index: index, Size: cpSize, Root: base64.StdEncoding.EncodeToString(root[:]), Proof: []string{}}
			for _, h := range proof {
				rep.Proof = append(rep.Proof, base64.StdEncoding.EncodeToString(h[:]))
			}
			if json.Valid(es[0]) {
				rep.Entry = es[0]
			}
			verr := audit.VerifyInclusion(index, cpSize, es[0], root, proof)
			rep.Verified = verr == nil
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", shownEntry(es[0]))
			}
			if verr != nil {
				return negative("audit prove: entry %d is NOT proven in the signed tree of size %d: %v", index, cpSize, verr)
			}
			if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "verified: entry %d is in the signed tree of size %d (root %s)\n", index, cpSize, rep.Root)
			}
			if st != nil && st.Key == key && (seen == nil || cpSize > seen.Size) {
				// The checkpoint extends the pinned tree: pin it.
				ns := &verifyState{Key: key, Size: cpSize, Root: rep.Root, Time: time.Now().UTC().Format(time.RFC3339)}
				if err := saveState(statePath, ns); err != nil {
					return usageErr("%v", err)
				}
			}
			return nil
		},
	}
	c.Flags().Int64Var(&index, "index", 0, "prove entry `N` (required)")
	c.Flags().Int64Var(&size, "size", 0, "the tree size `S` to prove against; must be the checkpoint's (default: the checkpoint's)")
	c.Flags().StringVar(&cpFile, "checkpoint", "", "prove against the signed checkpoint in `FILE` (default: the server's latest)")
	c.Flags().StringVar(&keyFlag, "key", "", "the note verifier `KEY` to trust, or a file holding it")
	c.Flags().StringVar(&statePath, "state", "", "the state `FILE` of audit verify, holding the pinned key and tree")
	proveFmt = addFormatFlag(c, "text", "text", "json")
	return c
}

// shownEntry is an entry as `audit prove` (before its proof is checked)
// and `audit tail` print it: the bytes come from the server, which they
// do not trust, and a terminal acts on control characters (an ESC[8m
// hides the refusal printed next); `audit export` writes exact bytes. An
// entry that is JSON is shown with its DEL and C1 characters (a caller's
// path may hold them) as \u escapes, the same JSON; anything else quoted.
func shownEntry(b []byte) string {
	if !json.Valid(b) || !utf8.Valid(b) {
		return fmt.Sprintf("(not a JSON entry) %+q", b)
	}
	var sb strings.Builder
	for _, r := range string(b) {
		if r == 0x7f || r >= 0x80 && r < 0xa0 {
			fmt.Fprintf(&sb, "\\u%04x", r)
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
