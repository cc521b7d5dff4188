// Package audit is the portable core of mayfly's tamper-evident audit log,
// in the manner of golang.org/x/mod/sumdb/tlog and note: the entry format,
// the Merkle tree over entries, signed checkpoints, inclusion and
// consistency proofs and their verification. It does no I/O of its own and
// never imports the store: Verify reads a stored log through a Reader its
// caller supplies, VerifyStream an exported one through an io.Reader.
// Package auditlog runs the log (appends, durability, the journal, sinks).
// It never writes a whole mayfly token into an entry: EncodeEvent reduces
// checksum-valid tokens to their hint.
//
// # Entries
//
// An entry is one line of compact JSON, without its newline at most
// MaxEntrySize bytes:
//
//	{"index":N,"time":"T","type":"TYPE",…}
//
// N is the entry's position in the log (0 first, decimal, no leading
// zero), T the time the log took it (RFC 3339 with nanoseconds, in UTC,
// ending in "Z"), TYPE one of the Type constants or any other
// [a-z0-9._-]{1,64}. Then come the other fields of Event, in the order
// they are declared, each left out when empty; strings are escaped as
// encoding/json escapes them, and detail is an object with its keys
// sorted. EncodeEvent writes an event's object ({"type":…}) and
// AppendEntry puts the index and time in front of it. Readers take the
// exact bytes: the log hashes them, never a re-encoding (ParseEntry is for
// looking at fields).
//
// # Tree
//
// The log is an RFC 6962 Merkle tree over the entries' bytes: an entry's
// leaf hash is SHA-256(0x00 || entry), an inner node's SHA-256(0x01 ||
// left || right), the empty tree's SHA-256(""); stored hashes are numbered
// as tlog numbers them (tlog.StoredHashIndex). Proofs are RFC 6962 audit
// paths, leaf to root; on the wire {"hashes":["base64",…]} (MarshalProof).
//
// # Checkpoints
//
// A checkpoint is a C2SP tlog-checkpoint signed as a note
// (golang.org/x/mod/sumdb/note, Ed25519). Its body is three lines: the
// origin (the signing key's name, DefaultOrigin unless configured), the
// tree size in decimal and the root hash in standard base64; extension
// lines may follow and are ignored. After a blank line comes one signature
// line per signer, "— NAME BASE64(4-byte key hash || signature)". The
// verifier key is "NAME+HASH+BASE64(0x01 || public key)".
//
// # Worked example
//
// Two entries taken at 2026-01-02T03:04:05Z (Example prints all of this
// and TestDocShowsExample checks that these lines are its output):
//
//	{"index":0,"time":"2026-01-02T03:04:05Z","type":"token.exchange","lease":"lse_01","issuer":"https://token.actions.githubusercontent.com","subject":"repo:acme/app:ref:refs/heads/main","grant":"deploy","status":200,"source":"10.0.0.1"}
//	{"index":1,"time":"2026-01-02T03:04:05Z","type":"gateway.request","lease":"lse_01","upstream":"api","method":"GET","path":"/v1/items","status":200,"bytes_out":512,"duration_ms":3,"detail":{"decision":"allow","rule":0}}
//
// Their leaf hashes, in hex, and the root of the tree of size 2
// (SHA-256(0x01 || leaf 0 || leaf 1)):
//
//	leaf 0:  44f36e9db6aa7be840a35043b025d6889b4382cc82013832b7472f775e96ac36
//	leaf 1:  243aac7b0a37d73b633ef50b9b8af23b1cace5b12f0f942f7962c153e055448d
//	root:     c647c151d74ef1c37549e33acc433a7549a50998b6e3afae11d57475aac7d823
//
// The checkpoint for that tree signed by the key named
// mayfly.example/audit (verifier key
// mayfly.example/audit+5918e622+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs):
//
//	mayfly.example/audit
//	2
//	xkfBUddO8cN1SeM6zEM6dUmlCZi246+uEdV0darH2CM=
//
//	— mayfly.example/audit WRjmIijduFw565KpbJTvMRuNTK4sFGNfCUiodYOmOY/DYtsH23mEJSTWDx/ZnQu+YyWMGGfgWJmY1IKCrnYlWhNvnQs=
//
// The inclusion proof of entry 1 in that tree is entry 0's leaf hash.
package audit
