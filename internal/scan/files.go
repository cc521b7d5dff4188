package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// binarySniff is how much of a file is looked at for a NUL byte.
const binarySniff = 8 << 10

// pipeline runs produce (which sends jobs) against s.workers scanning
// goroutines and hands every finding to emit, from the calling goroutine.
func (s *Scanner) pipeline(ctx context.Context, produce func(ctx context.Context, jobs chan<- *job) error, emit func(Finding)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *job, s.workers)
	results := make(chan []Finding, s.workers)
	var perr error
	go func() {
		perr = produce(ctx, jobs)
		close(jobs)
	}()
	var wg sync.WaitGroup
	for range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				fs := s.scanJob(j)
				if j.pooled != nil {
					*j.pooled = j.b[:0]
					s.pool.Put(j.pooled)
				}
				if len(fs) > 0 {
					results <- fs
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(results)
	}()
	for fs := range results {
		for _, f := range fs {
			emit(f)
		}
	}
	if perr != nil {
		return perr
	}
	return ctx.Err()
}

// ScanPaths scans files and folders (recursively; .git folders, symbolic
// links, binary files and files over MaxFileSize are skipped). Findings
// reach emit as they are found, from a single goroutine, in no particular
// order. A path that cannot be read at all is an error; a file inside a
// folder that cannot be read is passed to Options.Warn.
func (s *Scanner) ScanPaths(ctx context.Context, paths []string, emit func(Finding)) (Stats, error) {
	var st Stats
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return st, fmt.Errorf("scan: %w", err)
		}
	}
	var files, skipped, nbytes atomic.Int64
	err := s.pipeline(ctx, func(ctx context.Context, jobs chan<- *job) error {
		names := make(chan string, 64)
		var werr error
		go func() {
			defer close(names)
			for _, root := range paths {
				// A named root that is a symlink is followed (WalkDir would
				// list the link alone and scan nothing); links below it are
				// not, so a walk cannot loop or leave the tree. Paths keep
				// the name the caller gave.
				real := root
				if fi, err := os.Lstat(root); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
					if real, werr = filepath.EvalSymlinks(root); werr != nil {
						werr = fmt.Errorf("scan: %w", werr)
						return
					}
				}
				werr = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
					if real != root {
						p = root + strings.TrimPrefix(p, real)
					}
					if err != nil {
						if p == root {
							return err
						}
						s.warn(err)
						return nil
					}
					if d.IsDir() {
						if d.Name() == ".git" && p != root {
							return filepath.SkipDir
						}
						return nil
					}
					if !d.Type().IsRegular() {
						return nil
					}
					select {
					case names <- p:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				})
				if werr != nil {
					return
				}
			}
		}()
		readers := max(1, min(4, s.workers))
		var wg sync.WaitGroup
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range names {
					if ctx.Err() != nil {
						continue
					}
					n, ok, err := s.readFile(ctx, p, jobs)
					switch {
					case err != nil:
						s.warn(err)
					case !ok:
						skipped.Add(1)
					default:
						files.Add(1)
						nbytes.Add(n)
					}
					if s.opts.Progress != nil {
						s.opts.Progress(Stats{Files: files.Load(), Skipped: skipped.Load(), Bytes: nbytes.Load()})
					}
				}
			}()
		}
		wg.Wait()
		return werr
	}, emit)
	st = Stats{Files: files.Load(), Skipped: skipped.Load(), Bytes: nbytes.Load()}
	return st, err
}

// readFile cuts one file into jobs. ok is false when the file was skipped.
func (s *Scanner) readFile(ctx context.Context, p string, jobs chan<- *job) (int64, bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, false, fmt.Errorf("scan: %w", err)
	}
	defer f.Close()
	if s.opts.MaxFileSize > 0 {
		fi, err := f.Stat()
		if err != nil {
			return 0, false, fmt.Errorf("scan: %w", err)
		}
		if fi.Size() > s.opts.MaxFileSize {
			return 0, false, nil
		}
	}
	meta := &srcMeta{file: filepath.ToSlash(p)}
	return s.chunks(ctx, meta, f, true, func(j *job) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// chunks reads r in windows of s.chunk bytes, each with s.overlap bytes of
// context either side, and passes them to send. With sniff, a first window
// holding a NUL byte in its first 8 KiB ends it (ok=false).
func (s *Scanner) chunks(ctx context.Context, meta *srcMeta, r io.Reader, sniff bool, send func(*job) error) (int64, bool, error) {
	C, ov := s.chunk, s.overlap
	var ctxTail, carry []byte
	line, col := 1, 1
	var total int64
	first := true
	for {
		if err := ctx.Err(); err != nil {
			return total, false, err
		}
		bp := s.pool.Get().(*[]byte)
		buf := append((*bp)[:0], ctxTail...)
		own0 := len(buf)
		buf = append(buf, carry...)
		eof := false
		for len(buf)-own0 < C+ov {
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if errors.Is(err, io.EOF) {
				eof = true
				break
			}
			if err != nil {
				s.pool.Put(bp)
				return total, false, fmt.Errorf("scan: reading %s: %w", meta.file, err)
			}
		}
		if first {
			first = false
			// A NUL makes a file binary, unless a UTF-16 byte order mark
			// starts it (Windows PowerShell's Out-File, a .reg export) or
			// it is UTF-16 text without one (looksUTF16).
			head := buf[own0:min(len(buf), own0+binarySniff)]
			if sniff && bytes.IndexByte(head, 0) >= 0 && !bytes.HasPrefix(head, []byte{0xFF, 0xFE}) && !bytes.HasPrefix(head, []byte{0xFE, 0xFF}) &&
				!looksUTF16(head) {
				s.pool.Put(bp)
				return 0, false, nil
			}
		}
		own1 := len(buf)
		if !eof {
			own1 = own0 + C
		}
		total += int64(own1 - own0)
		ctxTail = append(ctxTail[:0], buf[max(0, own1-ov):own1]...)
		carry = append(carry[:0], buf[own1:]...)
		j := &job{meta: meta, b: buf, own0: own0, own1: own1, line: line, col: col, pooled: bp}
		line, col = advance(buf[own0:own1], line, col)
		if own1 > own0 || total == 0 {
			if err := send(j); err != nil {
				return total, false, err
			}
		} else {
			s.pool.Put(bp)
		}
		if eof {
			return total, true, nil
		}
	}
}

// looksUTF16 reports whether a file starting with head is UTF-16 text
// without a byte order mark, as git checks out a file marked
// working-tree-encoding=UTF-16LE (or BE) and as .NET's Encoding.Unicode
// writes: in its first 512 bytes (16 at least), three in four characters
// are ASCII text (a NUL beside a printable byte, on the same side every
// time, mostly) and none is U+0000, which binary data is full of.
func looksUTF16(head []byte) bool { return utf16Text(head, 16) }

// utf16Text is looksUTF16 for text of at least minLen bytes (a line of a
// diff is shorter than a file's head).
func utf16Text(head []byte, minLen int) bool {
	n := min(len(head), 512) &^ 1
	if n < minLen {
		return false
	}
	text := func(c byte) bool { return c >= 0x20 && c < 0x7f || c == '\t' || c == '\n' || c == '\r' }
	le, be := 0, 0
	for i := 0; i < n; i += 2 {
		switch lo, hi := head[i], head[i+1]; {
		case lo == 0 && hi == 0:
			return false
		case hi == 0 && text(lo):
			le++
		case lo == 0 && text(hi):
			be++
		}
	}
	return 4*max(le, be) >= 3*(n/2) && 8*min(le, be) <= max(le, be)
}
