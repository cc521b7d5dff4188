package server

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// ErrKeyMismatch: a node's keys are not those of the database it was
// pointed at.
var ErrKeyMismatch = errors.New("keys do not match the database")

// AuditKeyEnv names the environment variable that may hold the audit
// signing key for init --join (instead of a file).
const AuditKeyEnv = "MAYFLY_AUDIT_KEY"

// metaAuditKey is the meta row holding the audit verifier key of the
// database's log (public): every node's signing key must match it.
const metaAuditKey = "audit_verifier_key"

// checkAuditKey refuses a signing key whose verifier is not the one the
// database was initialised with. A database from before the key was
// recorded is checked against its latest signed checkpoint, then records
// it.
func checkAuditKey(ctx context.Context, st *store.DB, signer string) error {
	vkey, recorded, err := matchAuditKey(ctx, st, signer)
	if err != nil || recorded {
		return err
	}
	if _, err := st.PutMetaIfAbsent(ctx, metaAuditKey, []byte(vkey)); err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	return checkAuditKey(ctx, st, signer) // another node may have recorded first
}

// auditKeyReader is what matching an audit key reads (a read-only store
// for a join, which writes nothing before both keys match).
type auditKeyReader interface {
	GetMeta(ctx context.Context, key string) ([]byte, error)
	LatestAuditCheckpoint(ctx context.Context) (int64, []byte, error)
}

// matchAuditKey is checkAuditKey without the write: it returns the
// signer's verifier key and whether the database records it (false: it
// records none, and the key verifies its latest checkpoint, if any).
func matchAuditKey(ctx context.Context, st auditKeyReader, signer string) (vkey string, recorded bool, err error) {
	vkey, err = audit.VerifierKeyFor(strings.TrimSpace(signer))
	if err != nil {
		return "", false, fmt.Errorf("audit key: %w", err)
	}
	stored, err := st.GetMeta(ctx, metaAuditKey)
	switch {
	case err == nil:
		if string(stored) != vkey {
			return "", false, fmt.Errorf("audit key: %w: the database's log is signed by %s", ErrKeyMismatch, keyName(string(stored)))
		}
		return vkey, true, nil
	case !errors.Is(err, store.ErrNotFound):
		return "", false, fmt.Errorf("audit key: %w", err)
	}
	_, note, err := st.LatestAuditCheckpoint(ctx)
	if err == nil {
		if _, _, err := audit.ParseCheckpoint(note, vkey); err != nil {
			return "", false, fmt.Errorf("audit key: %w: it does not verify the log's latest checkpoint", ErrKeyMismatch)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", false, fmt.Errorf("audit key: %w", err)
	}
	return vkey, false, nil
}

// keyName is the name+hash part of a note verifier key (no key bytes).
func keyName(vkey string) string {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) < 2 {
		return "another key"
	}
	return "key " + parts[0] + "+" + parts[1]
}

// JoinOptions are the inputs of Join. Keys come from files or, when the
// file is not given, from the environment (MAYFLY_MASTER_KEY,
// MAYFLY_AUDIT_KEY).
type JoinOptions struct {
	DataDir       string
	Postgres      string
	MasterKeyFile string
	AuditKeyFile  string
	CACert        string // the cluster's CA certificate (clients trust it)
	CAKey         string // its key: signs this node's server certificate
	SANs          []string
	Getenv        func(string) string // default os.Getenv
}

// JoinResult is what Join made.
type JoinResult struct {
	Joined bool   `json:"joined"`
	CAFile string `json:"ca_file"`
}

// Join makes a data directory for one more node of a cluster on an
// initialised PostgreSQL database: the cluster's master and audit keys,
// its CA certificate, and a server certificate of this node's own signed
// by the cluster's CA. The keys must open the database: a master key that
// cannot unseal its keyring, or an audit key other than the log's, is
// refused and nothing is written. No admin token is made (the cluster has
// its own).
func Join(ctx context.Context, o JoinOptions) (res *JoinResult, err error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Postgres == "" {
		return nil, errors.New("join: --postgres (or MAYFLY_POSTGRES) names the cluster's database")
	}
	if err := checkSANs(o.SANs); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if o.CACert == "" || o.CAKey == "" {
		return nil, errors.New("join: --ca-cert and --ca-key (the cluster's CA, ca.pem and ca-key.pem of the first node) are needed to issue this node's certificate")
	}
	d, err := freshDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	masterEnv := ""
	if o.MasterKeyFile == "" {
		masterEnv = o.Getenv(secret.MasterKeyEnv)
		if masterEnv == "" {
			return nil, fmt.Errorf("join: no master key: give --master-key-file or set %s", secret.MasterKeyEnv)
		}
	}
	master, err := secret.LoadMasterKey(o.MasterKeyFile, masterEnv)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer clear(master)
	signer, err := readAuditKey(o.AuditKeyFile, o.Getenv(AuditKeyEnv))
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	ca, cak, caPEM, err := loadCA(o.CACert, o.CAKey)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	// Check both keys against the database before writing anything to it
	// or a file: through a handle that cannot write, since opening the
	// store migrates its schema, which the cluster's other nodes, of an
	// older release, would then refuse.
	if err := checkJoinKeys(ctx, o.Postgres, master, signer); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	st, err := store.Open(ctx, store.Config{PostgresDSN: o.Postgres, MaxConns: 4})
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer st.Close()
	// Records the audit key in a database from before it was recorded.
	if err := checkAuditKey(ctx, st, signer); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	vkey, _ := audit.VerifierKeyFor(signer)
	// Only a database never sealed (its versions from before they were
	// authenticated) has versions for this node's first start to seal;
	// otherwise a version without a MAC there is planted, and the data
	// dir must say so before that start (sealLegacyPolicies).
	all, sealed, err := st.PolicyVersionCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("join: policy versions: %w", err)
	}
	neverSeal := all == 0 || sealed > 0
	// The same for rotation settings.
	allRot, sealedRot, err := st.RotationCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("join: rotations: %w", err)
	}
	neverSealRotations := allRot == 0 || sealedRot > 0

	remove, err := makeDataDir(o.DataDir, []string{d.MasterKey(), d.AuditKey(), d.AuditPub(), d.CACert(), d.ServerCert(), d.ServerKey(), d.PolicySealed(), d.RotationSealed()})
	if err != nil {
		return nil, err
	}
	// The first file is made exclusively: a join refused there lost to
	// another init or join running at once on the same dir, whose files
	// are not this one's to remove.
	claimed := false
	defer func() {
		if err != nil && claimed {
			remove()
		}
	}()
	if o.MasterKeyFile != "" {
		// A key given in the environment stays there: the server reads
		// MAYFLY_MASTER_KEY first.
		buf := make([]byte, base64.StdEncoding.EncodedLen(len(master))+1)
		base64.StdEncoding.Encode(buf, master)
		buf[len(buf)-1] = '\n'
		err := writeFileExcl(d.MasterKey(), buf, 0o600)
		clear(buf)
		if err != nil {
			return nil, fmt.Errorf("master key: %w", err)
		}
		claimed = true
	}
	if err := writeFileExcl(d.AuditKey(), []byte(signer+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	claimed = true
	if err := writeFileExcl(d.AuditPub(), []byte(vkey+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := writeFileExcl(d.CACert(), caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if err := issueServerCert(ca, cak, d.ServerCert(), d.ServerKey(), o.SANs, time.Now()); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	if neverSeal {
		if err := writePolicySealed(d); err != nil {
			return nil, err
		}
	}
	if neverSealRotations {
		if err := writeRotationSealed(d); err != nil {
			return nil, err
		}
	}
	marker, _ := json.Marshal(map[string]any{"initialised_at": time.Now().UTC().Format(time.RFC3339), "schema": store.SchemaVersion(), "joined": true})
	if err := writeFileExcl(d.Marker(), append(marker, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("marker: %w", err)
	}
	return &JoinResult{Joined: true, CAFile: d.CACert()}, nil
}

// checkJoinKeys refuses a master key that does not open every version of
// the database's keyring, or an audit key other than its log's, reading
// the database only.
func checkJoinKeys(ctx context.Context, dsn string, master []byte, signer string) error {
	ro, err := store.OpenReadOnly(ctx, store.Config{PostgresDSN: dsn})
	if err != nil {
		return err
	}
	defer ro.Close()
	ks, err := ro.KeyVersions(ctx)
	if err != nil {
		return err
	}
	if len(ks) == 0 {
		return errors.New("the database is not initialised: run mayfly init --postgres on the first node")
	}
	if !secret.SealedBy(master, ks) {
		return fmt.Errorf("master key: %w: it does not open the database's keyring", ErrKeyMismatch)
	}
	_, _, err = matchAuditKey(ctx, ro, signer)
	return err
}

// readAuditKey reads a note signer key from file, else from env.
func readAuditKey(file, env string) (string, error) {
	raw := env
	if file != "" {
		b, err := readKeyFile(file, "audit key")
		if err != nil {
			return "", err
		}
		raw = string(b)
		clear(b)
	} else if raw == "" {
		return "", fmt.Errorf("no audit key: give --audit-key-file or set %s", AuditKeyEnv)
	}
	k := strings.TrimSpace(raw)
	if _, err := audit.VerifierKeyFor(k); err != nil {
		return "", fmt.Errorf("audit key: not a note signer key (PRIVATE+KEY+…)")
	}
	return k, nil
}

// loadCA reads a CA certificate and its private key (PEM).
func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, nil, fmt.Errorf("CA certificate %s: not a PEM certificate", certFile)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	if !ca.IsCA {
		return nil, nil, nil, fmt.Errorf("CA certificate %s: not a CA", certFile)
	}
	keyPEM, err := readKeyFile(keyFile, "CA key")
	if err != nil {
		return nil, nil, nil, err
	}
	kblk, _ := pem.Decode(keyPEM)
	clear(keyPEM)
	if kblk == nil {
		return nil, nil, nil, fmt.Errorf("CA key %s: not PEM", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	clear(kblk.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, nil, fmt.Errorf("CA key %s: not a signing key", keyFile)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, nil, fmt.Errorf("CA key %s does not belong to the CA certificate %s", keyFile, certFile)
	}
	return ca, signer, certPEM, nil
}
