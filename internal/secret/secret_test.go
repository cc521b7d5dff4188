package secret

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

var ctx = context.Background()

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// testOpts make background work quick and deterministic in tests.
func testOpts() Options {
	return Options{RetireGrace: -1, RefreshInterval: 100 * time.Millisecond, RewrapBatch: 16, RecordCacheTTL: -1}
}

func openVault(t testing.TB, st Store, key []byte, opts Options) *Vault {
	t.Helper()
	v, err := Open(ctx, st, key, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func waitRewrap(t testing.TB, v *Vault) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := v.WaitRewrap(c); err != nil {
		t.Fatalf("WaitRewrap: %v", err)
	}
}

func mustReveal(t testing.TB, v *Vault, name string, want []byte, wantVersion int) {
	t.Helper()
	got, ver, err := v.Reveal(ctx, name)
	if err != nil {
		t.Fatalf("Reveal(%s): %v", name, err)
	}
	if !bytes.Equal(got, want) || (wantVersion != 0 && ver != wantVersion) {
		t.Fatalf("Reveal(%s) = %d bytes v%d, want %d bytes v%d (equal=%v)", name, len(got), ver, len(want), wantVersion, bytes.Equal(got, want))
	}
}

func TestPutReveal(t *testing.T) {
	big := bytes.Repeat([]byte{0xA5}, MaxValueSize)
	cases := []struct {
		name  string
		value []byte
	}{
		{"github-token", []byte("ghp_exampleexampleexample")},
		{"a", []byte{0}},
		{"with.dots_and-dashes9", []byte("x\x00y\xff")},
		{"max-size", big},
		{strings.Repeat("n", MaxNameLen), []byte("long name")},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			for _, cache := range []time.Duration{-1, 0} {
				opts := testOpts()
				opts.RecordCacheTTL = cache
				v := openVault(t, b.DB, key, opts)
				pfx := fmt.Sprintf("c%d", cache+1)
				for _, c := range cases {
					name := c.name
					if len(name)+len(pfx) <= MaxNameLen {
						name = pfx + name
					} else {
						name = pfx + name[len(pfx):]
					}
					for want := 1; want <= 3; want++ {
						val := append(bytes.Clone(c.value[:len(c.value)-1]), byte(want))
						ver, err := v.Put(ctx, name, val)
						if err != nil || ver != want {
							t.Fatalf("Put(%s) = %d, %v; want %d", name, ver, err, want)
						}
						mustReveal(t, v, name, val, want)
						m, err := v.Meta(ctx, name)
						if err != nil || m.Version != want || m.KeyVersion != 1 || m.Name != name || m.CreatedAt.IsZero() {
							t.Fatalf("Meta(%s) = %+v, %v", name, m, err)
						}
					}
				}
				v.Close()
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	b := storetest.SQLite(t)
	v := openVault(t, b.DB, newKey(t), testOpts())
	names := []string{"", "sys/token-hmac", "-a", ".a", "_a", "a b", "a/b", "é", "a\x00b", strings.Repeat("a", MaxNameLen+1), "../x"}
	for _, n := range names {
		if _, err := v.Put(ctx, n, []byte("x")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Put(%q) err = %v, want ErrInvalidName", n, err)
		}
		if _, _, err := v.Reveal(ctx, n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Reveal(%q) err = %v, want ErrInvalidName", n, err)
		}
		if _, err := v.Meta(ctx, n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Meta(%q) err = %v, want ErrInvalidName", n, err)
		}
		if err := v.Delete(ctx, n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Delete(%q) err = %v, want ErrInvalidName", n, err)
		}
	}
	for _, val := range [][]byte{nil, {}, make([]byte, MaxValueSize+1)} {
		if _, err := v.Put(ctx, "ok", val); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("Put(%d bytes) err = %v, want ErrInvalidValue", len(val), err)
		}
	}
	for _, c := range []struct {
		purpose string
		size    int
	}{{"", 32}, {"a/b", 32}, {"ok", 8}, {"ok", 4096}} {
		if _, err := v.SystemKey(ctx, c.purpose, c.size); err == nil {
			t.Errorf("SystemKey(%q, %d) succeeded", c.purpose, c.size)
		}
	}
	if _, err := Open(ctx, b.DB, make([]byte, 16), testOpts()); err == nil {
		t.Error("Open with a 16-byte master key succeeded")
	}
	if _, err := Open(ctx, b.DB, newKey(t), Options{RecordCacheTTL: 2 * time.Second}); err == nil {
		t.Error("Open with a 2 s record cache succeeded")
	}
}

func TestConcurrentPutsOneName(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), testOpts())
			const writers, each = 32, 4
			var mu sync.Mutex
			byVersion := map[int]string{}
			var wg sync.WaitGroup
			errs := make(chan error, writers*each)
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						val := fmt.Sprintf("value-%d-%d", w, i)
						ver, err := v.Put(ctx, "shared", []byte(val))
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						if prev, dup := byVersion[ver]; dup {
							errs <- fmt.Errorf("version %d given to %s and %s", ver, prev, val)
						}
						byVersion[ver] = val
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for ver := 1; ver <= writers*each; ver++ {
				if _, ok := byVersion[ver]; !ok {
					t.Fatalf("version %d missing", ver)
				}
			}
			mustReveal(t, v, "shared", []byte(byVersion[writers*each]), writers*each)
		})
	}
}

func TestListMetaDelete(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), Options{RetireGrace: -1}) // default cache on
			planted := map[string]string{"b-db": "planted-db-password-Qx9", "a-gh": "planted-ghp-token-Zz1"}
			for n, val := range planted {
				if _, err := v.Put(ctx, n, []byte(val)); err != nil {
					t.Fatal(err)
				}
			}
			sys, err := v.SystemKey(ctx, "token-hmac", 32)
			if err != nil {
				t.Fatal(err)
			}
			list, err := v.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 || list[0].Name != "a-gh" || list[1].Name != "b-db" || list[0].Version != 1 || list[0].KeyVersion != 1 {
				t.Fatalf("List = %+v", list)
			}
			js, _ := json.Marshal(list)
			for _, val := range planted {
				if bytes.Contains(js, []byte(val)) {
					t.Fatalf("List JSON contains a value: %s", js)
				}
			}
			if bytes.Contains(js, []byte("sys/")) || bytes.Contains(js, []byte(base64.StdEncoding.EncodeToString(sys))) {
				t.Fatalf("List JSON shows a system key: %s", js)
			}
			if !strings.Contains(string(js), `"key_version":1`) {
				t.Fatalf("List JSON = %s", js)
			}
			// Reveal fills the cache; a Delete must still be seen at once.
			mustReveal(t, v, "a-gh", []byte(planted["a-gh"]), 1)
			if err := v.Delete(ctx, "a-gh"); err != nil {
				t.Fatal(err)
			}
			for _, err := range []error{
				func() error { _, _, err := v.Reveal(ctx, "a-gh"); return err }(),
				func() error { _, err := v.Meta(ctx, "a-gh"); return err }(),
				v.Delete(ctx, "a-gh"),
				func() error { _, err := v.Meta(ctx, "never"); return err }(),
			} {
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("err = %v, want ErrNotFound", err)
				}
			}
			if ver, err := v.Put(ctx, "a-gh", []byte("new")); err != nil || ver != 2 {
				t.Fatalf("Put after Delete = %d, %v; want version 2", ver, err)
			}
			mustReveal(t, v, "a-gh", []byte("new"), 2)
			// A cached record never hides this node's own Put.
			if _, err := v.Put(ctx, "a-gh", []byte("newer")); err != nil {
				t.Fatal(err)
			}
			mustReveal(t, v, "a-gh", []byte("newer"), 3)
		})
	}
}

// searchable returns the forms in which a value might leak.
func searchable(val []byte) [][]byte {
	return [][]byte{
		val,
		[]byte(hex.EncodeToString(val)),
		[]byte(base64.StdEncoding.EncodeToString(val)),
		[]byte(base64.RawURLEncoding.EncodeToString(val)),
	}
}

// dumpTables returns every byte of the tables the vault writes, through SQL.
func dumpTables(t *testing.T, db *store.DB) []byte {
	t.Helper()
	var out []byte
	for _, q := range []string{
		`SELECT name, version, kek_version, wrapped_dek, ciphertext, created_at, deleted_at FROM secrets`,
		`SELECT version, sealed, created_at FROM keyring`,
		`SELECT key, value FROM meta`,
	} {
		rows, err := db.SQL().QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		n := 0
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, c := range vals {
				switch c := c.(type) {
				case []byte:
					out = append(out, c...)
				case string:
					out = append(out, c...)
				default:
					out = fmt.Appendf(out, "%v", c)
				}
				out = append(out, 0)
			}
			n++
		}
		rows.Close()
		if n == 0 {
			t.Fatalf("%s: no rows", q)
		}
	}
	return out
}

func TestNothingInTheClearAtRest(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			v := openVault(t, b.DB, key, testOpts())
			planted := []byte("planted-" + hex.EncodeToString(newKey(t)))
			if _, err := v.Put(ctx, "planted", planted); err != nil {
				t.Fatal(err)
			}
			sys, err := v.SystemKey(ctx, "token-hmac", 32)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			waitRewrap(t, v)
			if _, err := v.Put(ctx, "planted", planted); err != nil { // and a second version
				t.Fatal(err)
			}
			mustReveal(t, v, "planted", planted, 2)

			blobs := map[string][]byte{"tables": dumpTables(t, b.DB)}
			if b.Name == "sqlite" {
				var seq int
				var dbName, file string
				if err := b.DB.SQL().QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &dbName, &file); err != nil {
					t.Fatal(err)
				}
				for _, f := range []string{file, file + "-wal"} {
					data, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					blobs[f] = data
				}
				if len(blobs[file+"-wal"]) == 0 {
					t.Fatal("empty WAL: the test would not see fresh writes")
				}
			}
			secrets := map[string][]byte{"value": planted, "master key": key, "system key": sys}
			for where, blob := range blobs {
				if !bytes.Contains(blob, []byte("planted")) && where == "tables" {
					t.Fatalf("%s: the secret's name is missing: the search reads the wrong bytes", where)
				}
				for what, s := range secrets {
					for _, form := range searchable(s) {
						if bytes.Contains(blob, form) {
							t.Fatalf("%s contains the %s", where, what)
						}
					}
				}
			}
		})
	}
}

func exec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.SQL().ExecContext(ctx, db.Rebind(q), args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestTamperAndSwap(t *testing.T) {
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[(i%len(b)+len(b))%len(b)] ^= 0x01
		return b
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, db *store.DB, a, b store.Secret)
	}{
		{"flip ciphertext tag", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, flip(b.Ciphertext, -1), b.Name, b.Version)
		}},
		{"flip ciphertext body", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, flip(b.Ciphertext, 14), b.Name, b.Version)
		}},
		{"flip nonce", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, flip(b.Ciphertext, 0), b.Name, b.Version)
		}},
		{"flip wrapped key", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET wrapped_dek = ? WHERE name = ? AND version = ?`, flip(b.WrappedDEK, 20), b.Name, b.Version)
		}},
		{"truncate ciphertext", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, b.Ciphertext[:10], b.Name, b.Version)
		}},
		{"empty wrapped key", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET wrapped_dek = ? WHERE name = ? AND version = ?`, []byte{}, b.Name, b.Version)
		}},
		{"swap whole record from A", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ?, wrapped_dek = ? WHERE name = ? AND version = ?`, a.Ciphertext, a.WrappedDEK, b.Name, b.Version)
		}},
		{"swap ciphertext only", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET ciphertext = ? WHERE name = ? AND version = ?`, a.Ciphertext, b.Name, b.Version)
		}},
		{"swap wrapped key only", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET wrapped_dek = ? WHERE name = ? AND version = ?`, a.WrappedDEK, b.Name, b.Version)
		}},
		{"claim another keyring version", func(t *testing.T, db *store.DB, a, b store.Secret) {
			exec(t, db, `UPDATE secrets SET kek_version = ? WHERE name = ? AND version = ?`, 2, b.Name, b.Version)
		}},
		{"replay an older version of the same name", func(t *testing.T, db *store.DB, a, b store.Secret) {
			// Present B v2's sealed bytes as a newer version v3.
			exec(t, db, `INSERT INTO secrets (name, version, kek_version, wrapped_dek, ciphertext, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
				b.Name, b.Version+1, b.KEKVersion, b.WrappedDEK, b.Ciphertext, time.Now().UnixNano())
		}},
	}
	for _, be := range storetest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			v := openVault(t, be.DB, newKey(t), testOpts())
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					an, bn := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
					aval, bval := []byte("planted-value-of-A"), []byte("planted-value-of-B")
					for _, p := range []struct {
						n string
						v []byte
					}{{an, aval}, {bn, []byte("old")}, {bn, bval}} {
						if _, err := v.Put(ctx, p.n, p.v); err != nil {
							t.Fatal(err)
						}
					}
					a, _ := be.DB.GetSecret(ctx, an)
					b, _ := be.DB.GetSecret(ctx, bn)
					mustReveal(t, v, bn, bval, 2)
					c.tamper(t, be.DB, a, b)
					got, _, err := v.Reveal(ctx, bn)
					if err == nil {
						t.Fatalf("Reveal after tampering succeeded (%d bytes, is A's value: %v)", len(got), bytes.Equal(got, aval))
					}
					if !errors.Is(err, ErrTampered) {
						t.Fatalf("err = %v, want ErrTampered", err)
					}
					if strings.Contains(err.Error(), "planted") {
						t.Fatalf("error shows a value: %v", err)
					}
					mustReveal(t, v, an, aval, 1) // A is untouched
				})
			}
		})
	}
}

func TestMasterKey(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			v := openVault(t, b.DB, key, testOpts())
			if _, err := v.Put(ctx, "x", []byte("y")); err != nil {
				t.Fatal(err)
			}
			if _, err := v.RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			waitRewrap(t, v)
			v.Close()
			if _, err := v.Put(ctx, "x", []byte("y")); !errors.Is(err, ErrClosed) {
				t.Fatalf("Put after Close: %v", err)
			}

			_, err := Open(ctx, b.DB, newKey(t), testOpts())
			if !errors.Is(err, ErrWrongMasterKey) || !strings.Contains(err.Error(), "master key does not open the keyring") {
				t.Fatalf("Open with another key: %v", err)
			}
			// The right key still works, and sees version 2 only.
			v2 := openVault(t, b.DB, key, testOpts())
			mustReveal(t, v2, "x", []byte("y"), 1)
			st, err := v2.Status(ctx)
			if err != nil || st.Current != 2 || len(st.Versions) != 1 || st.Pending != 0 {
				t.Fatalf("Status = %+v, %v", st, err)
			}
			v2.Close()
			// A tampered keyring row is refused like a wrong key.
			var sealed []byte
			if err := b.DB.SQL().QueryRowContext(ctx, `SELECT sealed FROM keyring WHERE version = 2`).Scan(&sealed); err != nil {
				t.Fatal(err)
			}
			sealed[len(sealed)-1] ^= 1
			exec(t, b.DB, `UPDATE keyring SET sealed = ? WHERE version = 2`, sealed)
			if _, err := Open(ctx, b.DB, key, testOpts()); !errors.Is(err, ErrWrongMasterKey) {
				t.Fatalf("Open with a tampered keyring: %v", err)
			}
		})
	}
}

// failingStore fails RewrapSecret after a number of successful calls: a
// process killed in the middle of a re-wrap.
type failingStore struct {
	Store
	left atomic.Int64
}

var errInjected = errors.New("injected failure")

func (f *failingStore) RewrapSecret(ctx context.Context, name string, version, from, to int, wrapped []byte) error {
	if f.left.Add(-1) < 0 {
		return errInjected
	}
	return f.Store.RewrapSecret(ctx, name, version, from, to, wrapped)
}

func putMany(t *testing.T, v *Vault, n int) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				name, val := fmt.Sprintf("s%04d", i), fmt.Appendf(nil, "value %d", i)
				if _, err := v.Put(ctx, name, val); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				out[name] = val
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func checkAllOn(t *testing.T, v *Vault, want map[string][]byte, version int) {
	t.Helper()
	st, err := v.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Current != version || len(st.Versions) != 1 || st.Versions[0] != version || st.Pending != 0 || st.LastError != "" {
		t.Fatalf("Status = %+v, want everything on version %d only", st, version)
	}
	list, err := v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if m.KeyVersion != version {
			t.Fatalf("%s is on keyring version %d", m.Name, m.KeyVersion)
		}
	}
	for name, val := range want {
		mustReveal(t, v, name, val, 0)
	}
}

func TestRewrapResumesAfterKill(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			v := openVault(t, b.DB, key, testOpts())
			want := putMany(t, v, 200)
			v.Close()

			// A process that dies after 50 re-wraps.
			fs := &failingStore{Store: b.DB}
			fs.left.Store(50)
			v = openVault(t, fs, key, testOpts())
			if ver, err := v.RotateMasterKey(ctx); err != nil || ver != 2 {
				t.Fatalf("RotateMasterKey = %d, %v", ver, err)
			}
			if err := v.WaitRewrap(ctx); !errors.Is(err, errInjected) {
				t.Fatalf("WaitRewrap = %v, want the injected failure", err)
			}
			st, _ := v.Status(ctx)
			if st.Pending != 150 || st.LastError == "" || len(st.Versions) != 2 {
				t.Fatalf("Status after failure = %+v", st)
			}
			v.Close()

			// A new process (new store handle) finishes the job.
			db := b.Reopen(t)
			v = openVault(t, db, key, testOpts())
			waitRewrap(t, v)
			checkAllOn(t, v, want, 2)

			// Killed right after a rotation, before the re-wrap ran far.
			if _, err := v.RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			v.Close()
			st, _ = func() (Status, error) {
				v := openVault(t, db, key, Options{RewrapBatch: 1, RetireGrace: 10 * time.Minute})
				defer v.Close()
				return v.Status(ctx)
			}()
			t.Logf("left after an immediate close: %+v", st)
			db = b.Reopen(t)
			v = openVault(t, db, key, testOpts())
			waitRewrap(t, v)
			checkAllOn(t, v, want, 3)
		})
	}
}

func TestRotateUnderConcurrentPuts(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			opts := testOpts()
			opts.RecordCacheTTL = 0 // default cache: reveals must survive key retirement
			v := openVault(t, b.DB, newKey(t), opts)
			want := putMany(t, v, 100)
			var mu sync.Mutex
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var writes atomic.Int64
			errs := make(chan error, 64)
			for w := range 8 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						// Half new names, half new versions of old ones.
						name := fmt.Sprintf("w%d-%d", w, i)
						if i%2 == 1 {
							name = fmt.Sprintf("s%04d", (w*37+i)%100)
						}
						val := fmt.Appendf(nil, "v %s %d", name, i)
						mu.Lock() // keep want in step with the store for this name
						if _, err := v.Put(ctx, name, val); err != nil {
							mu.Unlock()
							errs <- err
							return
						}
						want[name] = val
						mu.Unlock()
						writes.Add(1)
						if _, _, err := v.Reveal(ctx, name); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			for range 2 {
				time.Sleep(100 * time.Millisecond)
				if _, err := v.RotateMasterKey(ctx); err != nil {
					t.Fatal(err)
				}
			}
			waitRewrap(t, v)
			time.Sleep(50 * time.Millisecond)
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			waitRewrap(t, v)
			t.Logf("%d puts during two rotations", writes.Load())
			checkAllOn(t, v, want, 3)
		})
	}
}

func TestSystemKey(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			// Two "nodes" on one store, each with many callers.
			nodes := []*Vault{openVault(t, b.DB, key, testOpts()), openVault(t, b.DB, key, testOpts())}
			var wg sync.WaitGroup
			got := make([][]byte, 32)
			errs := make([]error, 32)
			for i := range got {
				wg.Go(func() { got[i], errs[i] = nodes[i%2].SystemKey(ctx, "token-hmac", 32) })
			}
			wg.Wait()
			for i := range got {
				if errs[i] != nil || len(got[i]) != 32 || !bytes.Equal(got[i], got[0]) {
					t.Fatalf("caller %d: %x, %v; first %x", i, got[i], errs[i], got[0])
				}
			}
			if m, _ := b.DB.GetSecret(ctx, "sys/token-hmac"); m.Version != 1 {
				t.Fatalf("stored version %d, want 1", m.Version)
			}
			other, err := nodes[0].SystemKey(ctx, "audit-key", 64)
			if err != nil || len(other) != 64 || bytes.Equal(other[:32], got[0]) {
				t.Fatalf("another purpose: %v", err)
			}
			if _, err := nodes[0].SystemKey(ctx, "token-hmac", 64); err == nil {
				t.Fatal("SystemKey with another size succeeded")
			}
			if _, _, err := nodes[0].Reveal(ctx, "sys/token-hmac"); !errors.Is(err, ErrInvalidName) {
				t.Fatalf("Reveal of a system key: %v", err)
			}
			// Re-wrapped like any secret, stable across restarts.
			if _, err := nodes[1].RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			waitRewrap(t, nodes[1])
			for _, n := range nodes {
				n.Close()
			}
			v := openVault(t, b.Reopen(t), key, testOpts())
			again, err := v.SystemKey(ctx, "token-hmac", 32)
			if err != nil || !bytes.Equal(again, got[0]) {
				t.Fatalf("after rotation and reopen: %x, %v; want %x", again, err, got[0])
			}
			checkAllOn(t, v, nil, 2)
		})
	}
}

// TestTwoNodesRotate: a node that did not rotate learns the new version
// and keeps revealing (the record cache and KEK cache follow the store).
func TestTwoNodesRotate(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			key := newKey(t)
			opts := testOpts()
			opts.RecordCacheTTL = 0
			a, c := openVault(t, b.DB, key, opts), openVault(t, b.DB, key, opts)
			if _, err := a.Put(ctx, "gh", []byte("tok")); err != nil {
				t.Fatal(err)
			}
			mustReveal(t, c, "gh", []byte("tok"), 1) // c caches the v1-wrapped record
			// Both rotate at once: one version is added, both use it.
			var va, vc int
			var ea, ec error
			var wg sync.WaitGroup
			wg.Go(func() { va, ea = a.RotateMasterKey(ctx) })
			wg.Go(func() { vc, ec = c.RotateMasterKey(ctx) })
			wg.Wait()
			if ea != nil || ec != nil || va < 2 || vc < 2 {
				t.Fatalf("rotations: %d %v, %d %v", va, ea, vc, ec)
			}
			waitRewrap(t, a)
			waitRewrap(t, c)
			mustReveal(t, c, "gh", []byte("tok"), 1)
			mustReveal(t, a, "gh", []byte("tok"), 1)
			st, _ := a.Status(ctx)
			if len(st.Versions) != 1 || st.Pending != 0 {
				t.Fatalf("Status = %+v", st)
			}
		})
	}
}

// TestSystemKeyTwoProcesses: two store handles (two processes) on one
// PostgreSQL database race to create a system key and a secret version.
func TestSystemKeyTwoProcesses(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	key := newKey(t)
	var nodes []*Vault
	for range 2 {
		db, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		nodes = append(nodes, openVault(t, db, key, testOpts()))
	}
	for round := range 5 {
		var wg sync.WaitGroup
		got := make([][]byte, 8)
		errs := make([]error, 8)
		for i := range got {
			wg.Go(func() { got[i], errs[i] = nodes[i%2].SystemKey(ctx, fmt.Sprintf("k%d", round), 32) })
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
				t.Fatalf("round %d caller %d: %v (same: %v)", round, i, errs[i], bytes.Equal(got[i], got[0]))
			}
		}
	}
	var wg sync.WaitGroup
	vers := make([]int, 32)
	errs := make([]error, 32)
	for i := range errs {
		wg.Go(func() { vers[i], errs[i] = nodes[i%2].Put(ctx, "shared", fmt.Appendf(nil, "v%d", i)) })
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, err := range errs {
		if err != nil || seen[vers[i]] {
			t.Fatalf("put %d across processes: v%d, %v", i, vers[i], err)
		}
		seen[vers[i]] = true
	}
	if m, err := nodes[0].Meta(ctx, "shared"); err != nil || m.Version != 32 {
		t.Fatalf("Meta = %+v, %v; want version 32", m, err)
	}
}

func TestRewrapDoneAndClose(t *testing.T) {
	b := storetest.SQLite(t)
	key := newKey(t)
	v, err := Open(ctx, b.DB, key, Options{}) // production defaults
	if err != nil {
		t.Fatal(err)
	}
	if v.opts.RetireGrace >= 0 || v.opts.RecordCacheTTL != MaxRecordCacheTTL {
		t.Fatalf("defaults on SQLite: %+v", v.opts)
	}
	putMany(t, v, 50)
	if _, err := v.RotateMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.RewrapDone():
	case <-time.After(30 * time.Second):
		t.Fatal("RewrapDone never closed")
	}
	if st, _ := v.Status(ctx); st.Rewrapping || st.Pending != 0 || len(st.Versions) != 1 {
		t.Fatalf("Status = %+v", st)
	}
	// Closing with work queued releases waiters.
	if _, err := v.RotateMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	done := v.RewrapDone()
	v.Close()
	v.Close() // idempotent
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RewrapDone not released by Close")
	}
	if err := v.WaitRewrap(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitRewrap after Close = %v", err)
	}
	for _, err := range []error{
		func() error { _, _, err := v.Reveal(ctx, "s0001"); return err }(),
		func() error { _, err := v.RotateMasterKey(ctx); return err }(),
		func() error { _, err := v.SystemKey(ctx, "x", 32); return err }(),
		func() error { _, err := v.List(ctx); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	}
}

// A rotation's grace period keeps the replaced version readable by
// RevealPrevious (and only it), re-wrapped with the rest, and gone after.
func TestPutKeepingGrace(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), testOpts())
			if _, _, err := v.RevealPrevious(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("previous of nothing: %v", err)
			}
			if _, err := v.Put(ctx, "db", []byte("old-password")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.RevealPrevious(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("previous of a first version: %v", err)
			}
			if ver, err := v.PutKeeping(ctx, "db", []byte("new-password"), time.Now().Add(time.Hour)); err != nil || ver != 2 {
				t.Fatalf("PutKeeping = %d %v", ver, err)
			}
			mustReveal(t, v, "db", []byte("new-password"), 2)
			prev, pv, err := v.RevealPrevious(ctx, "db")
			if err != nil || string(prev) != "old-password" || pv != 1 {
				t.Fatalf("previous = %q v%d %v", prev, pv, err)
			}
			// A master-key rotation re-wraps the version in grace too.
			if _, err := v.RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			waitRewrap(t, v)
			if prev, _, err := v.RevealPrevious(ctx, "db"); err != nil || string(prev) != "old-password" {
				t.Fatalf("previous after re-wrap = %q %v", prev, err)
			}
			// A plain Put ends the grace at once.
			if _, err := v.Put(ctx, "db", []byte("third-password")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.RevealPrevious(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("previous after a plain put: %v", err)
			}
			// A grace already over is never revealed, and the sweep
			// (every RefreshInterval) destroys it.
			if _, err := v.PutKeeping(ctx, "db", []byte("fourth-password"), time.Now().Add(-time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.RevealPrevious(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("previous past its grace: %v", err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				var n int
				if err := b.DB.SQL().QueryRowContext(ctx, b.DB.Rebind(`SELECT COUNT(*) FROM secrets WHERE name = ? AND deleted_at IS NULL`), "db").Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d sealed versions left after the grace ended", n)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// Reveal keeps the value it opened beside the cached sealed record; a
// change this node makes is seen by the very next Reveal, a deleted
// (revoked) secret is never served from the cache, and a caller zeroing
// its copy does not reach the cache.
// A staged version (a postgres_password rotation's new value before its
// ALTER ROLE commits) is stored but never in use: Reveal, RevealPrevious,
// List and Meta keep answering with the live version until Promote puts
// it in use (keeping the one it replaces for the grace period). A later
// Put replaces it, and a master-key rotation re-wraps it like any other.
func TestStagedVersion(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), testOpts())
			if _, _, err := v.RevealPending(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("pending of nothing: %v", err)
			}
			if _, err := v.Put(ctx, "db", []byte("old-password")); err != nil {
				t.Fatal(err)
			}
			if ver, err := v.Stage(ctx, "db", []byte("new-password"), 1); err != nil || ver != 2 {
				t.Fatalf("Stage = %d %v", ver, err)
			}
			mustReveal(t, v, "db", []byte("old-password"), 1)
			if _, _, err := v.RevealPrevious(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("previous while a version is staged: %v", err)
			}
			if m, err := v.Meta(ctx, "db"); err != nil || m.Version != 1 {
				t.Fatalf("Meta = %+v %v", m, err)
			}
			if l, err := v.List(ctx); err != nil || len(l) != 1 || l[0].Version != 1 {
				t.Fatalf("List = %+v %v", l, err)
			}
			if _, err := v.RotateMasterKey(ctx); err != nil {
				t.Fatal(err)
			}
			waitRewrap(t, v)
			if p, ver, err := v.RevealPending(ctx, "db"); err != nil || string(p) != "new-password" || ver != 2 {
				t.Fatalf("pending after re-wrap = %q v%d %v", p, ver, err)
			}
			if err := v.Promote(ctx, "db", 2, 1, time.Now().Add(time.Hour), nil); err != nil {
				t.Fatal(err)
			}
			mustReveal(t, v, "db", []byte("new-password"), 2)
			if prev, pv, err := v.RevealPrevious(ctx, "db"); err != nil || string(prev) != "old-password" || pv != 1 {
				t.Fatalf("previous after promotion = %q v%d %v", prev, pv, err)
			}
			if _, _, err := v.RevealPending(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("pending after promotion: %v", err)
			}
			if err := v.Promote(ctx, "db", 2, 2, time.Time{}, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("promoted twice: %v", err)
			}
			if err := v.Promote(ctx, "db", 2, 1, time.Time{}, nil); !errors.Is(err, store.ErrSecretChanged) {
				t.Fatalf("promoted twice, from a version no longer live: %v", err)
			}
			// A Put after a Stage replaces the staged value: it is never
			// promoted.
			if _, err := v.Stage(ctx, "db", []byte("staged-password"), 2); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Put(ctx, "db", []byte("admin-password")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.RevealPending(ctx, "db"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("pending after a put: %v", err)
			}
			if err := v.Promote(ctx, "db", 3, 2, time.Time{}, nil); !errors.Is(err, store.ErrSecretChanged) {
				t.Fatalf("a replaced staged version was promoted: %v", err)
			}
			mustReveal(t, v, "db", []byte("admin-password"), 4)
		})
	}
}

// A rotation's write (PutKeepingNoted, Stage, Promote) names the live
// version its value was made from, and is refused with nothing written
// once an admin replaced or deleted the secret: the admin's change stands.
func TestWriteFromReplacedVersion(t *testing.T) {
	put := func(v *Vault, n string) error {
		_, err := v.PutKeepingNoted(ctx, n, []byte("rotated"), 1, time.Time{}, nil)
		return err
	}
	stage := func(v *Vault, n string) error { _, err := v.Stage(ctx, n, []byte("rotated"), 1); return err }
	promote := func(v *Vault, n string) error { return v.Promote(ctx, n, 2, 1, time.Time{}, nil) }
	tests := []struct {
		name   string
		staged bool // a value is staged (from version 1) before the change
		delete bool // the admin deletes; else puts a new value
		write  func(v *Vault, name string) error
	}{
		{"put after a put", false, false, put},
		{"put after a delete", false, true, put},
		{"stage after a put", false, false, stage},
		{"stage after a delete", false, true, stage},
		{"promote after a put", true, false, promote},
		{"promote after a delete", true, true, promote},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), testOpts())
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					name := fmt.Sprintf("db%d", i)
					if _, err := v.Put(ctx, name, []byte("old")); err != nil {
						t.Fatal(err)
					}
					if tt.staged {
						if _, err := v.Stage(ctx, name, []byte("rotated"), 1); err != nil {
							t.Fatal(err)
						}
					}
					if tt.delete {
						if err := v.Delete(ctx, name); err != nil {
							t.Fatal(err)
						}
					} else if _, err := v.Put(ctx, name, []byte("admin")); err != nil {
						t.Fatal(err)
					}
					next, _ := b.DB.NextSecretVersion(ctx, name)
					if err := tt.write(v, name); !errors.Is(err, store.ErrSecretChanged) {
						t.Fatalf("err = %v, want store.ErrSecretChanged", err)
					}
					if n, _ := b.DB.NextSecretVersion(ctx, name); n != next {
						t.Fatalf("a version was written: next %d, was %d", n, next)
					}
					if _, _, err := v.RevealPending(ctx, name); !errors.Is(err, ErrNotFound) {
						t.Fatalf("a staged value is left: %v", err)
					}
					if tt.delete {
						if _, _, err := v.Reveal(ctx, name); !errors.Is(err, ErrNotFound) {
							t.Fatalf("the deleted secret is live again: %v", err)
						}
						return
					}
					mustReveal(t, v, name, []byte("admin"), next-1)
				})
			}
		})
	}
}

func TestRevealValueCache(t *testing.T) {
	cases := []struct {
		name    string
		change  func(t *testing.T, v *Vault, name string)
		want    []byte // nil: ErrNotFound
		version int
	}{
		{"delete", func(t *testing.T, v *Vault, name string) {
			if err := v.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
		}, nil, 0},
		{"delete noted", func(t *testing.T, v *Vault, name string) {
			if err := v.DeleteNoted(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
		}, nil, 0},
		{"put", func(t *testing.T, v *Vault, name string) {
			if _, err := v.Put(ctx, name, []byte("value-two")); err != nil {
				t.Fatal(err)
			}
		}, []byte("value-two"), 2},
		{"rotation (put keeping)", func(t *testing.T, v *Vault, name string) {
			if _, err := v.PutKeeping(ctx, name, []byte("value-rotated"), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, []byte("value-rotated"), 2},
		{"caller zeroes its copy", func(t *testing.T, v *Vault, name string) {
			got, _, err := v.Reveal(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			clear(got)
		}, []byte("value-one"), 1},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			v := openVault(t, b.DB, newKey(t), Options{RetireGrace: -1}) // default cache on
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					name := fmt.Sprintf("gh%d", i)
					if _, err := v.Put(ctx, name, []byte("value-one")); err != nil {
						t.Fatal(err)
					}
					mustReveal(t, v, name, []byte("value-one"), 1)
					if _, _, ok := v.cache.value(name); !ok {
						t.Fatal("the opened value is not cached: the case tests nothing")
					}
					c.change(t, v, name)
					got, ver, err := v.Reveal(ctx, name)
					if c.want == nil {
						if !errors.Is(err, ErrNotFound) {
							t.Fatalf("Reveal after the change = %d bytes v%d, %v; want ErrNotFound", len(got), ver, err)
						}
						return
					}
					if err != nil || !bytes.Equal(got, c.want) || ver != c.version {
						t.Fatalf("Reveal after the change = %q v%d, %v; want %q v%d", got, ver, err, c.want, c.version)
					}
				})
			}
		})
	}
}

// A value opened from one record is never kept beside another: a Reveal
// that opened the old record while a Put replaced it must not attach the
// old value to the new record.
func TestRecordCacheValueFollowsRecord(t *testing.T) {
	var c recordCache
	c.init(time.Minute)
	old := store.Secret{Name: "gh", Version: 1, KEKVersion: 1, WrappedDEK: []byte("dek-1"), Ciphertext: []byte("ct-1")}
	cur := store.Secret{Name: "gh", Version: 2, KEKVersion: 1, WrappedDEK: []byte("dek-2"), Ciphertext: []byte("ct-2")}
	c.put("gh", old, c.generation())
	c.invalidate("gh") // a Put of version 2
	c.put("gh", cur, c.generation())
	c.keepValue("gh", old, []byte("value-one")) // the slow Reveal of version 1
	if val, ver, ok := c.value("gh"); ok {
		t.Fatalf("value = %q v%d beside record v2", val, ver)
	}
	c.keepValue("gh", cur, []byte("value-two"))
	if val, ver, ok := c.value("gh"); !ok || string(val) != "value-two" || ver != 2 {
		t.Fatalf("value = %q v%d %v, want value-two v2", val, ver, ok)
	}
	// Same version, other bytes (a record swapped in the store): no value.
	c.invalidate("gh")
	swapped := cur
	swapped.Ciphertext = []byte("ct-x")
	c.put("gh", swapped, c.generation())
	c.keepValue("gh", cur, []byte("value-two"))
	if _, _, ok := c.value("gh"); ok {
		t.Fatal("value kept beside a record with other bytes")
	}
}

// keyringReadsDown fails keyring reads while down is set: a node whose
// keyring refreshes fail for a while (a store blip, a partition).
type keyringReadsDown struct {
	Store
	down atomic.Bool
}

func (s *keyringReadsDown) KeyVersions(ctx context.Context) ([]store.KeyVersion, error) {
	if s.down.Load() {
		return nil, errInjected
	}
	return s.Store.KeyVersions(ctx)
}

// TestWriteAfterMissedRotation: a node that missed a master-key rotation
// (it holds only keyring version 1, which another node has re-wrapped
// away and deleted) writes a secret. The store refuses the row sealed
// under the deleted version; the node reloads its keyring and seals again,
// or, when it cannot read the keyring, refuses the write. It never
// reports success for a value nothing can open.
func TestWriteAfterMissedRotation(t *testing.T) {
	put := func(v *Vault, name string) ([]byte, error) {
		_, err := v.Put(ctx, name, []byte("value"))
		return []byte("value"), err
	}
	rotate := func(v *Vault, name string) ([]byte, error) {
		_, err := v.PutKeeping(ctx, name, []byte("rotated"), time.Now().Add(time.Minute))
		return []byte("rotated"), err
	}
	reveal := func(v *Vault, name string) ([]byte, error) {
		val, _, err := v.Reveal(ctx, name)
		return val, err
	}
	systemKey := func(v *Vault, name string) ([]byte, error) { return v.SystemKey(ctx, name, 32) }
	tests := []struct {
		name        string
		keyringDown bool // node B's keyring reads still fail at write time
		write, open func(v *Vault, name string) ([]byte, error)
	}{
		{"put", false, put, reveal},
		{"rotation write", false, rotate, reveal},
		{"system key", false, systemKey, systemKey},
		{"put, keyring unreadable", true, put, reveal},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					key := newKey(t)
					var be storetest.Backend
					if b.Name == "sqlite" {
						be = storetest.SQLite(t)
					} else {
						be = storetest.Postgres(t)
					}
					opts := Options{RetireGrace: 50 * time.Millisecond, RefreshInterval: 50 * time.Millisecond, RecordCacheTTL: -1}
					a := openVault(t, be.DB, key, opts)
					// B misses what follows: it never refreshes its keyring
					// by itself (as if every refresh failed), once Open's
					// own re-wrap check is done.
					stale := &keyringReadsDown{Store: be.DB}
					opts.RefreshInterval = time.Hour
					b := openVault(t, stale, key, opts)
					waitRewrap(t, b)

					if _, err := a.RotateMasterKey(ctx); err != nil {
						t.Fatal(err)
					}
					waitRewrap(t, a) // re-wrapped, grace spent, version 1 deleted
					if st, err := a.Status(ctx); err != nil || len(st.Versions) != 1 || st.Versions[0] != 2 {
						t.Fatalf("status %+v %v", st, err)
					}
					stale.down.Store(tt.keyringDown)
					want, err := tt.write(b, "written-by-b")
					stale.down.Store(false)
					if tt.keyringDown {
						if err == nil {
							t.Fatal("a write sealed under a deleted keyring version was accepted")
						}
						if _, err := a.Meta(ctx, "written-by-b"); !errors.Is(err, ErrNotFound) {
							t.Fatalf("a refused write left a row: %v", err)
						}
						return
					}
					if err != nil {
						t.Fatalf("write: %v", err)
					}
					for name, v := range map[string]*Vault{"A": a, "B": b} {
						if got, err := tt.open(v, "written-by-b"); err != nil || !bytes.Equal(got, want) {
							t.Errorf("node %s: the accepted value does not open: %v", name, err)
						}
					}
				})
			}
		})
	}
}

// SealedBy tells the keyring a master key made from any other (a failed
// init erases only its own).
func TestSealedBy(t *testing.T) {
	b := storetest.SQLite(t)
	key := newKey(t)
	openVault(t, b.DB, key, testOpts()).Close()
	kvs, err := b.DB.KeyVersions(ctx)
	if err != nil || len(kvs) != 1 {
		t.Fatalf("keyring %+v %v", kvs, err)
	}
	tests := []struct {
		name string
		key  []byte
		kvs  []store.KeyVersion
		want bool
	}{
		{"its master key", key, kvs, true},
		{"another master key", newKey(t), kvs, false},
		{"no keyring", key, nil, false},
		{"a short key", key[:16], kvs, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SealedBy(tt.key, tt.kvs); got != tt.want {
				t.Fatalf("SealedBy = %v, want %v", got, tt.want)
			}
		})
	}
}

// A version Delete, a plain Put or the end of a grace period destroys
// leaves no copy of its sealed bytes in the SQLite file: without
// secure_delete SQLite keeps an updated cell's old bytes in the page's free
// space, and anyone holding a later copy of mayfly.db (a backup, a disk
// image) and the master key opened the value an operator had removed.
// (PostgreSQL keeps dead tuples until VACUUM: a property of that server,
// out of mayfly's reach.)
func TestDestroyedLeavesNoTrace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int // small: inside a page; large: on overflow pages
		destroy func(t *testing.T, v *Vault, st *store.DB)
	}{
		{"delete/small", 100, func(t *testing.T, v *Vault, _ *store.DB) {
			if err := v.Delete(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete/large", 6000, func(t *testing.T, v *Vault, _ *store.DB) {
			if err := v.Delete(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced/small", 100, func(t *testing.T, v *Vault, _ *store.DB) {
			if _, err := v.Put(ctx, "gone", []byte("next")); err != nil {
				t.Fatal(err)
			}
		}},
		{"grace ended/large", 6000, func(t *testing.T, v *Vault, st *store.DB) {
			if _, err := v.PutKeeping(ctx, "gone", []byte("next"), time.Now().Add(-time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if n, err := st.RetireSecrets(ctx, time.Now()); err != nil || n != 1 {
				t.Fatalf("RetireSecrets = %d, %v", n, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/mayfly.db"
			st, err := store.Open(ctx, store.Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			v, err := Open(ctx, st, newKey(t), testOpts())
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			value := []byte(strings.Repeat("planted-", tc.size/8))
			for _, name := range []string{"gone", "kept"} {
				if _, err := v.Put(ctx, name, value); err != nil {
					t.Fatal(err)
				}
			}
			rec, err := st.GetSecret(ctx, "gone")
			if err != nil {
				t.Fatal(err)
			}
			kept, err := st.GetSecret(ctx, "kept")
			if err != nil {
				t.Fatal(err)
			}
			tc.destroy(t, v, st)
			v.Close()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			var file []byte
			for _, f := range []string{path, path + "-wal"} {
				b, err := os.ReadFile(f)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				file = append(file, b...)
			}
			// 32-byte windows: a large value spans pages.
			if !bytes.Contains(file, kept.WrappedDEK) || !bytes.Contains(file, kept.Ciphertext[40:72]) {
				t.Fatal("the live secret's sealed bytes are not found: the search reads the wrong bytes")
			}
			if bytes.Contains(file, rec.WrappedDEK) {
				t.Error("the destroyed version's wrapped data key is still in the database file")
			}
			if bytes.Contains(file, rec.Ciphertext[40:72]) {
				t.Error("the destroyed version's ciphertext is still in the database file")
			}
		})
	}
}
