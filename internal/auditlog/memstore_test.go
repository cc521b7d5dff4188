package auditlog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// memStore is an in-memory Storage with failure injection.
type memStore struct {
	mu          sync.Mutex
	entries     [][]byte
	hashes      map[int64][32]byte
	checkpoints map[int64][]byte
	cursors     map[string]int64
	fail        error         // every call fails with it when set
	appends     int           // AppendAudit calls that succeeded
	written     int           // of which not durable (store.AuditWritten or AuditKept)
	entering    chan struct{} // when set, told (without blocking) of each append before it locks
	failAppend  error         // AppendAudit alone fails with it when set
	// durableDone, when set, runs after each durable append (the store
	// locked): a test sees there what a crash right then would leave.
	durableDone func()
}

func newMemStore() *memStore {
	return &memStore{hashes: map[int64][32]byte{}, checkpoints: map[int64][]byte{}, cursors: map[string]int64{}}
}

func (m *memStore) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memStore) AuditSize(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	return int64(len(m.entries)), nil
}

// AppendAudit counts the commits that are not durable; in memory they
// are the same as durable ones.
func (m *memStore) AppendAudit(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte, mode store.AuditCommit) error {
	if mode < store.AuditDurable || mode > store.AuditKept {
		return fmt.Errorf("mem: unknown commit mode %d", mode)
	}
	if m.entering != nil {
		select {
		case m.entering <- struct{}{}:
		default:
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.failAppend != nil {
		return m.failAppend
	}
	if start != int64(len(m.entries)) {
		return fmt.Errorf("mem: %w", store.ErrConflict)
	}
	for _, e := range entries {
		m.entries = append(m.entries, append([]byte(nil), e...))
	}
	for i, h := range hashes {
		x := firstHash + int64(i)
		if _, dup := m.hashes[x]; dup {
			return fmt.Errorf("mem: stored hash %d written twice", x)
		}
		m.hashes[x] = h
	}
	m.appends++
	if mode != store.AuditDurable {
		m.written++
	} else if m.durableDone != nil {
		m.durableDone()
	}
	return nil
}

func (m *memStore) AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out [][]byte
	for i := start; i < int64(len(m.entries)) && len(out) < limit; i++ {
		out = append(out, append([]byte(nil), m.entries[i]...))
	}
	return out, nil
}

func (m *memStore) AuditHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	out := make([][32]byte, len(indexes))
	for i, x := range indexes {
		h, ok := m.hashes[x]
		if !ok {
			return nil, store.ErrNotFound
		}
		out[i] = h
	}
	return out, nil
}

func (m *memStore) PutAuditCheckpoint(ctx context.Context, size int64, note []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if _, ok := m.checkpoints[size]; !ok {
		m.checkpoints[size] = append([]byte(nil), note...)
	}
	return nil
}

func (m *memStore) LatestAuditCheckpoint(ctx context.Context) (int64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, nil, m.fail
	}
	if len(m.checkpoints) == 0 {
		return 0, nil, store.ErrNotFound
	}
	var sizes []int64
	for s := range m.checkpoints {
		sizes = append(sizes, s)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
	s := sizes[len(sizes)-1]
	return s, m.checkpoints[s], nil
}

func (m *memStore) AuditCheckpoint(ctx context.Context, size int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	n, ok := m.checkpoints[size]
	if !ok {
		return nil, store.ErrNotFound
	}
	return n, nil
}

func (m *memStore) AuditCursor(ctx context.Context, name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	return m.cursors[name], nil
}

func (m *memStore) SetAuditCursor(ctx context.Context, name string, next int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.cursors[name] = next
	return nil
}

var errInjected = errors.New("injected storage failure")

// fullStorage is what tests need from a backend.
type fullStorage interface {
	Storage
	CursorStorage
}

// backend is one storage under test; db is nil for the in-memory one.
type backend struct {
	name   string
	st     fullStorage
	db     *store.DB
	reopen func(t testing.TB) fullStorage
}

// allBackends returns the in-memory store, SQLite, and PostgreSQL when
// MAYFLY_TEST_POSTGRES is set.
func allBackends(t testing.TB) []backend {
	mem := newMemStore()
	out := []backend{{name: "mem", st: mem, reopen: func(testing.TB) fullStorage { return mem }}}
	return append(out, realBackends(t)...)
}

// realBackends returns SQLite, and PostgreSQL when configured.
func realBackends(t testing.TB) []backend {
	var out []backend
	for _, b := range storetest.Backends(t) {
		b := b
		out = append(out, backend{name: b.Name, st: b.DB, db: b.DB, reopen: func(t testing.TB) fullStorage { return b.Reopen(t) }})
	}
	return out
}
