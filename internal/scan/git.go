package scan

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// GitOptions choose the history ScanGit reads.
type GitOptions struct {
	// Dir is the repository (default ".").
	Dir string
	// Since scans the commits after REV (REV..HEAD); Range scans A..B (or,
	// without "..", the whole history of one revision). At most one of
	// them; neither scans all of HEAD's history.
	Since, Range string
	// FirstParent follows only the first parent of merges; otherwise each
	// merge is diffed against every parent (-m).
	FirstParent bool
	// All scans every ref, not only HEAD, every stash entry (the reflog
	// of refs/stash), and the messages of the annotated tags (whatever
	// Since or Range say).
	All bool
}

const commitMark = '\x01'

func gitBase(dir string) []string {
	if dir == "" {
		dir = "."
	}
	// Settings of the repository or the user that would change what git
	// prints are pinned: log.showRoot=false would hide the first commit's
	// diff, and every secret it adds; i18n.logOutputEncoding=UTF-16 would
	// print hashes and messages that no parser here reads; diff.relative
	// would hide every change outside the folder scanned from;
	// diff.interHunkContext would put unchanged lines between added ones,
	// which parseDiff does not count. Replace refs
	// (and grafts, see gitCommand) are not followed: either can show an
	// innocent commit in place of the stored one that adds a secret.
	return []string{"--no-replace-objects", "-C", dir, "-c", "core.quotePath=false", "-c", "diff.noprefix=false",
		"-c", "diff.mnemonicPrefix=false", "-c", "log.showSignature=false", "-c", "log.showRoot=true",
		"-c", "advice.graftFileDeprecated=false", "-c", "i18n.logOutputEncoding=UTF-8",
		"-c", "diff.relative=false", "-c", "diff.interHunkContext=0"}
}

// gitCommand runs git with args, its graft file an empty one: grafts
// rewrite parents as replace refs do, and --no-replace-objects leaves them.
func gitCommand(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(), "GIT_GRAFT_FILE="+os.DevNull)
	return cmd
}

// ScanGit scans the lines added by every commit in a repository's history
// (`git log -p --unified=0`, streamed) and every commit's message (file
// CommitMessage, line 1 the subject). Findings carry the commit, author
// and date; the same secret in the same file (same fingerprint) is
// reported once, for the oldest commit that adds it. Findings reach emit
// after the scan, newest commit first.
func (s *Scanner) ScanGit(ctx context.Context, o GitOptions, emit func(Finding)) error {
	if err := requireRepo(ctx, o.Dir); err != nil {
		return err
	}
	// A CI checkout is often shallow (depth 1): what it lacks cannot be
	// read, and a clean result must not pass for the whole history's.
	if out, err := gitCommand(ctx, append(gitBase(o.Dir), "rev-parse", "--is-shallow-repository")).Output(); err == nil &&
		strings.TrimSpace(string(out)) == "true" {
		s.warn(errors.New("scan: the repository is a shallow clone: the history before its shallow commits was not scanned (git fetch --unshallow first)"))
	}
	// --text: a .gitattributes in the scanned tree (`* -diff`) would
	// otherwise print every file as "Binary files differ"; parseDiff skips
	// binary content itself (a NUL byte, as for files).
	args := append(gitBase(o.Dir), "log", "-p", "--text", "--no-color", "--unified=0", "--no-ext-diff", "--no-textconv",
		"-M", "--full-history", "--format="+string(commitMark)+"%H%x00%aI%x00%an <%ae>", "-m")
	// The messages of the same commits, each ended by a NUL (-z), which a
	// message cannot hold: git prints a message only up to its first NUL.
	msgArgs := append(gitBase(o.Dir), "log", "--no-color", "-z", "--full-history", "--format=%H%x00%aI%x00%an <%ae>%x00%e%x00%B")
	var revs []string
	if o.FirstParent {
		revs = append(revs, "--first-parent")
	}
	if o.All {
		revs = append(revs, "--all")
	}
	switch {
	case o.Since != "" && o.Range != "":
		return errors.New("scan: give --since or --range, not both")
	case o.Since != "":
		if strings.HasPrefix(o.Since, "-") {
			return fmt.Errorf("scan: bad revision %q", o.Since)
		}
		revs = append(revs, o.Since+"..HEAD")
	case o.Range != "":
		if strings.HasPrefix(o.Range, "-") || strings.HasSuffix(o.Range, "..") || strings.HasPrefix(o.Range, "..") {
			return fmt.Errorf("scan: bad range %q (want A..B or REV)", o.Range)
		}
		revs = append(revs, o.Range)
	}
	// --all reaches the newest stash entry (refs/stash) only: the older
	// ones are in its reflog. Their commits go to git on its standard
	// input, where no number of them is too many.
	var stash map[string]string
	var stashRevs string
	if o.All {
		var err error
		if stash, stashRevs, err = stashEntries(ctx, o.Dir); err != nil {
			return err
		}
		if stashRevs != "" {
			revs = append(revs, "--stdin")
		}
	}
	revs = append(revs, "--")
	order := map[string]int{}
	var all []Finding
	collect := func(f Finding) { all = append(all, f) }
	if err := s.runGitIn(ctx, append(args, revs...), stashRevs, func(ctx context.Context, r io.Reader, jobs chan<- *job) error {
		return s.parseDiff(ctx, r, order, jobs)
	}, collect); err != nil {
		return err
	}
	if err := s.runGitIn(ctx, append(msgArgs, revs...), stashRevs, func(ctx context.Context, r io.Reader, jobs chan<- *job) error {
		return s.parseMessages(ctx, r, CommitMessage, o.Dir, order, jobs)
	}, collect); err != nil {
		return err
	}
	if o.All {
		// Every ref includes the tags, and an annotated tag's message is
		// no commit's: it is read from the tag objects themselves.
		tagArgs := append(gitBase(o.Dir), "for-each-ref", "--format=%(if:equals=tag)%(objecttype)%(then)"+
			"%(objectname)%00%(taggerdate:iso-strict)%00%(taggername) %(taggeremail)%00%00%(contents)%00%(end)", "refs/tags")
		if err := s.runGit(ctx, tagArgs, func(ctx context.Context, r io.Reader, jobs chan<- *job) error {
			return s.parseMessages(ctx, r, TagMessage, "", order, jobs)
		}, collect); err != nil {
			return err
		}
	}
	// One finding per fingerprint: the oldest commit (largest log index).
	// An allowed one (Options.KeepAllowed) never stands for one that is
	// not: the report would lose it.
	best := map[string]int{}
	for i, f := range all {
		key := f.Fingerprint
		if f.Allowed {
			key += "\x00allowed"
		}
		j, ok := best[key]
		if !ok || order[f.Commit] > order[all[j].Commit] ||
			order[f.Commit] == order[all[j].Commit] && lessPos(f, all[j]) {
			best[key] = i
		}
	}
	kept := make([]Finding, 0, len(best))
	for _, i := range best {
		kept = append(kept, all[i])
	}
	slices.SortFunc(kept, func(a, b Finding) int {
		if d := order[a.Commit] - order[b.Commit]; d != 0 {
			return d
		}
		return compareFindings(a, b)
	})
	for _, f := range kept {
		f.Stash = stash[f.Commit]
		emit(f)
	}
	return nil
}

// stashEntries lists the stash's entries (refs/stash and its reflog): the
// commits of each (the work tree's, the index's and the untracked files')
// mapped to the entry's name, newest first, and the entries' commits one
// a line, for git log --stdin ("" when there is no stash).
func stashEntries(ctx context.Context, dir string) (map[string]string, string, error) {
	if err := gitCommand(ctx, append(gitBase(dir), "rev-parse", "--verify", "-q", "refs/stash")).Run(); err != nil {
		return nil, "", nil // no stash
	}
	var stderr capBuffer
	cmd := gitCommand(ctx, append(gitBase(dir), "log", "-g", "--no-color", "--format=%H %P", "refs/stash", "--"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("scan: listing the stash: %v: %s", err, strings.TrimSpace(stderr.b.String()))
	}
	names := map[string]string{}
	var revs strings.Builder
	n := 0
	for l := range strings.Lines(string(out)) {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		revs.WriteString(f[0] + "\n")
		// The first parent is the commit the stash was made on: history.
		for i, c := range f {
			if i == 1 {
				continue
			}
			if _, ok := names[c]; !ok {
				names[c] = "stash@{" + strconv.Itoa(n) + "}"
			}
		}
		n++
	}
	return names, revs.String(), nil
}

// ScanStaged scans the lines added by the staged changes (git diff --cached).
func (s *Scanner) ScanStaged(ctx context.Context, dir string, emit func(Finding)) error {
	if err := requireRepo(ctx, dir); err != nil {
		return err
	}
	args := append(gitBase(dir), "diff", "--cached", "--text", "--no-color", "--unified=0", "--no-ext-diff", "--no-textconv", "-M", "--")
	var all []Finding
	order := map[string]int{}
	if err := s.runGit(ctx, args, func(ctx context.Context, r io.Reader, jobs chan<- *job) error {
		return s.parseDiff(ctx, r, order, jobs)
	}, func(f Finding) { all = append(all, f) }); err != nil {
		return err
	}
	SortFindings(all)
	for _, f := range all {
		emit(f)
	}
	return nil
}

type capBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 4096 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// runGit runs git with args and parse over its output.
func (s *Scanner) runGit(ctx context.Context, args []string, parse func(context.Context, io.Reader, chan<- *job) error, emit func(Finding)) error {
	return s.runGitIn(ctx, args, "", parse, emit)
}

// runGitIn is runGit with stdin as git's standard input.
func (s *Scanner) runGitIn(ctx context.Context, args []string, stdin string, parse func(context.Context, io.Reader, chan<- *job) error, emit func(Finding)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := gitCommand(ctx, args)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr capBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("scan: git: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("scan: starting git: %w", err)
	}
	seen := map[string]struct{}{}
	perr := s.pipeline(ctx, func(ctx context.Context, jobs chan<- *job) error {
		err := parse(ctx, out, jobs)
		if err != nil {
			cancel()
		}
		_, _ = io.Copy(io.Discard, out)
		return err
	}, func(f Finding) {
		// Pieces of very long lines overlap: drop exact repeats.
		k := f.Fingerprint + "\x00" + f.Commit + "\x00" + strconv.Itoa(f.Line) + ":" + strconv.Itoa(f.Column)
		if _, ok := seen[k]; ok {
			return
		}
		seen[k] = struct{}{}
		emit(f)
	})
	werr := cmd.Wait()
	if perr != nil {
		return perr
	}
	if werr != nil {
		return fmt.Errorf("scan: git %s: %v: %s", args[len(gitBase(""))], werr, strings.TrimSpace(stderr.b.String()))
	}
	return nil
}

// parseDiff reads unified=0 patches (optionally preceded by commit marker
// lines) and sends the added lines of each file as jobs.
func (s *Scanner) parseDiff(ctx context.Context, r io.Reader, order map[string]int, jobs chan<- *job) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var commit, author, date string
	var fm *srcMeta
	var buf []byte
	var lmap []lineRef
	remAdd, remDel := 0, 0
	newLine := 0
	added := 0 // bytes of the current file's added lines read so far
	inAdded, skipRest := false, false
	utf16 := false // the current file's added lines are UTF-16 text
	C, ov := s.chunk, s.overlap

	// sendTo sends buf with b[:own1] owned and the rest as context only.
	sendTo := func(own1 int) error {
		if len(buf) == 0 {
			return nil
		}
		j := &job{meta: fm, b: buf, own0: 0, own1: own1, lmap: lmap}
		buf, lmap = nil, nil
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	send := func() error { return sendTo(len(buf)) }
	// cutLong sends the buffer in the middle of a long line and keeps its
	// last ov bytes as the start of the next piece. Those bytes are only
	// right context here, owned by the next piece: a secret straddling the
	// cut would otherwise also match here, truncated at the buffer's end.
	cutLong := func() error {
		ref := lmap[len(lmap)-1]
		tail := max(ref.off, len(buf)-ov)
		rest := append([]byte(nil), buf[tail:]...)
		nref := lineRef{off: 0, line: ref.line, col0: ref.col0 + tail - ref.off}
		if err := sendTo(tail); err != nil {
			return err
		}
		buf, lmap = rest, []lineRef{nref}
		return nil
	}
	// sendFull sends the buffer once it holds a piece: cut in the middle of
	// a long line, else whole.
	sendFull := func() error {
		switch {
		case len(buf) < C+ov:
			return nil
		case inAdded:
			return cutLong()
		default:
			return send()
		}
	}
	for {
		sl, err := br.ReadSlice('\n')
		full := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !full && !(errors.Is(err, io.EOF) && len(sl) > 0) {
			if errors.Is(err, io.EOF) {
				return send()
			}
			return fmt.Errorf("scan: reading git output: %w", err)
		}
		if skipRest {
			skipRest = full
			continue
		}
		if inAdded {
			added += len(sl)
			buf = append(buf, bytes.TrimSuffix(sl, []byte("\n"))...)
			if !full {
				inAdded = false
				buf = append(buf, '\n')
				newLine++
			}
			if err := sendFull(); err != nil {
				return err
			}
			continue
		}
		if remAdd+remDel > 0 && len(sl) > 0 {
			switch sl[0] {
			case '+':
				remAdd--
				// Binary content (git no longer tells, with --text) is
				// skipped by the file scanner's rule: a NUL in the first
				// binarySniff bytes. A NUL further on (a crash dump at the
				// end of a log) leaves the file text, and the lines before
				// it scanned, as the file scanner does. UTF-16 text holds a
				// NUL beside every ASCII letter: the scanner reads it
				// (after its BOM, or from any line, git splitting it at
				// each 0x0A byte); the file scanner reads such a file too.
				if k := bytes.IndexByte(sl[1:], 0); fm != nil && k >= 0 && added+k < binarySniff && !utf16 {
					if l := sl[1:]; bytes.HasPrefix(l, []byte{0xFF, 0xFE}) || bytes.HasPrefix(l, []byte{0xFE, 0xFF}) || utf16Text(l, 4) {
						utf16 = true
					} else {
						fm, buf, lmap = nil, nil, nil
					}
				}
				added += len(sl) - 1
				if fm == nil {
					skipRest = full
					newLine++
					continue
				}
				lmap = append(lmap, lineRef{off: len(buf), line: newLine, col0: 0})
				buf = append(buf, bytes.TrimSuffix(sl[1:], []byte("\n"))...)
				if full {
					inAdded = true
				} else {
					buf = append(buf, '\n')
					newLine++
				}
				if err := sendFull(); err != nil {
					return err
				}
				continue
			case '-':
				remDel--
				skipRest = full
				continue
			case '\\':
				continue
			}
		}
		if full {
			skipRest = true
		}
		line := string(bytes.TrimRight(sl, "\r\n"))
		switch {
		case len(line) > 0 && line[0] == commitMark:
			if err := send(); err != nil {
				return err
			}
			parts := strings.SplitN(line[1:], "\x00", 3)
			commit, date, author = parts[0], "", ""
			if len(parts) == 3 {
				date, author = parts[1], parts[2]
			}
			if _, ok := order[commit]; !ok {
				order[commit] = len(order)
			}
			fm = nil
			remAdd, remDel = 0, 0
		case strings.HasPrefix(line, "diff --git ") || strings.HasPrefix(line, "diff --cc ") || strings.HasPrefix(line, "diff --combined "):
			if err := send(); err != nil {
				return err
			}
			fm = nil
			remAdd, remDel = 0, 0
		case strings.HasPrefix(line, "+++ "):
			if err := send(); err != nil {
				return err
			}
			added, utf16 = 0, false
			name := unquoteGitPath(line[4:])
			if name == "/dev/null" {
				fm = nil
				break
			}
			name = strings.TrimPrefix(name, "b/")
			fm = &srcMeta{file: name, commit: commit, author: author, date: date}
		case strings.HasPrefix(line, "@@ "):
			remDel, remAdd, newLine = parseHunk(line)
		}
	}
}

// CommitMessage is the File of a finding in a commit's message, and
// TagMessage in an annotated tag's (its Commit the tag object's name).
const (
	CommitMessage = "(commit message)"
	TagMessage    = "(tag message)"
)

// parseMessages reads records of an object name, date, author, declared
// encoding and message, each ended by a NUL (`git log -z`; for-each-ref
// puts newlines between records), and sends each message as the file
// name of its object, in windows like a file, so no length hides a secret.
// A commit of repository dir that declares an encoding other than UTF-8
// is read again as stored (rawMessage).
func (s *Scanner) parseMessages(ctx context.Context, r io.Reader, name, dir string, order map[string]int, jobs chan<- *job) error {
	br := bufio.NewReaderSize(r, 64<<10)
	send := func(j *job) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		var f [4]string
		for i := range f {
			v, err := readField(br, 4096)
			if i == 0 {
				v = strings.TrimLeft(v, "\n")
				if v == "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
					return nil
				}
			}
			if err != nil {
				return fmt.Errorf("scan: reading git commit messages: %w", err)
			}
			f[i] = v
		}
		if _, ok := order[f[0]]; !ok {
			order[f[0]] = len(order)
		}
		meta := &srcMeta{file: name, commit: f[0], date: f[1], author: f[2]}
		if _, _, err := s.chunks(ctx, meta, &untilNUL{br: br}, false, send); err != nil {
			return err
		}
		if enc := strings.ToLower(f[3]); enc != "" && enc != "utf-8" && enc != "utf8" && name == CommitMessage {
			if err := s.rawMessage(ctx, dir, meta, send); err != nil {
				return err
			}
		}
	}
}

// rawMessage scans the message of commit meta.commit as the object holds
// it. git log re-encodes a message from the encoding its commit declares,
// and one declared UTF-16 but written in ASCII comes out empty: a secret
// in it would pass unseen, though the commit publishes it.
func (s *Scanner) rawMessage(ctx context.Context, dir string, meta *srcMeta, send func(*job) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := gitCommand(ctx, append(gitBase(dir), "cat-file", "commit", meta.commit))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("scan: git: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("scan: starting git: %w", err)
	}
	br := bufio.NewReaderSize(out, 64<<10)
	// The headers end at the first empty line; a long one (a signature)
	// is read in pieces.
	for start := true; ; {
		sl, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
		if start && len(sl) == 1 {
			break
		}
		start = err == nil
	}
	_, _, err = s.chunks(ctx, meta, br, false, send)
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("scan: git cat-file commit %s: %w", meta.commit, werr)
	}
	return nil
}

// readField reads up to the next NUL and returns at most max bytes of it
// (a hash, a date, a name: longer is only noise to drop).
func readField(br *bufio.Reader, max int) (string, error) {
	var v []byte
	for {
		sl, err := br.ReadSlice(0)
		if len(v) < max {
			v = append(v, sl[:min(len(sl), max-len(v))]...)
		}
		switch {
		case err == nil:
			return string(bytes.TrimSuffix(v, []byte{0})), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(v) > 0:
			return "", io.ErrUnexpectedEOF
		default:
			return "", err
		}
	}
}

// untilNUL reads br up to (and consumes) the next NUL byte or the end.
type untilNUL struct {
	br   *bufio.Reader
	done bool
}

func (u *untilNUL) Read(p []byte) (int, error) {
	if u.done {
		return 0, io.EOF
	}
	if u.br.Buffered() == 0 {
		if _, err := u.br.Peek(1); err != nil {
			u.done = true
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, err
		}
	}
	b, _ := u.br.Peek(min(len(p), u.br.Buffered()))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		n := copy(p, b[:i])
		_, _ = u.br.Discard(i + 1)
		u.done = true
		return n, io.EOF
	}
	n := copy(p, b)
	_, _ = u.br.Discard(n)
	return n, nil
}

func unquoteGitPath(p string) string {
	p = strings.TrimSuffix(p, "\t")
	if strings.HasPrefix(p, `"`) {
		if u, err := strconv.Unquote(p); err == nil {
			return u
		}
	}
	return p
}

// parseHunk reads "@@ -a,b +c,d @@": lines removed, lines added, first new line.
func parseHunk(l string) (del, add, start int) {
	f := strings.Fields(l)
	if len(f) < 3 {
		return 0, 0, 0
	}
	count := func(s string) (int, int) {
		a, b, ok := strings.Cut(s[1:], ",")
		n := 1
		if ok {
			n, _ = strconv.Atoi(b)
		}
		v, _ := strconv.Atoi(a)
		return v, n
	}
	_, del = count(f[1])
	start, add = count(f[2])
	return del, add, start
}

func lessPos(a, b Finding) bool { return compareFindings(a, b) < 0 }

func compareFindings(a, b Finding) int {
	if c := strings.Compare(a.File, b.File); c != 0 {
		return c
	}
	if a.Line != b.Line {
		return a.Line - b.Line
	}
	if a.Column != b.Column {
		return a.Column - b.Column
	}
	return strings.Compare(a.Rule, b.Rule)
}

// SortFindings orders findings by file, line, column and rule.
func SortFindings(fs []Finding) {
	slices.SortStableFunc(fs, compareFindings)
}

// ErrNotRepo: the folder is not inside a git work tree or repository.
var ErrNotRepo = errors.New("not a git repository")

// requireRepo answers "not a git repository" in one line, rather than
// whatever git prints when asked for history outside one.
func requireRepo(ctx context.Context, dir string) error {
	cmd := gitCommand(ctx, append(gitBase(dir), "rev-parse", "--git-dir"))
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); ok {
			if dir == "" {
				dir = "."
			}
			return fmt.Errorf("%s: %w", dir, ErrNotRepo)
		}
		return fmt.Errorf("running git: %w", err)
	}
	return nil
}
