// verify.js checks, with WebCrypto alone, that an audit entry is in the log
// a signed checkpoint commits to: the checkpoint's Ed25519 note signature
// (golang.org/x/mod/sumdb/note) against the log's verifier key, then the
// entry's RFC 6962 inclusion path up to the checkpoint's root. It trusts
// nothing the server says beyond the verifier key the reader compares with
// their own copy. It runs in browsers and in node (>= 20) for its tests.

const enc = new TextEncoder();

function b64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

class Failure extends Error {}

function fail(msg) { throw new Failure(msg); }

// parseVerifierKey reads "NAME+HASH+BASE64(0x01 || 32-byte key)" and checks
// that HASH is the key's note hash (first 4 bytes of SHA-256(NAME "\n" 0x01 key)).
async function parseVerifierKey(vkey) {
  // The name and hash hold no '+'; the base64 key may.
  const i = vkey.indexOf("+"), j = vkey.indexOf("+", i + 1);
  if (i <= 0 || j < 0) fail("verifier key: not NAME+HASH+KEY");
  const name = vkey.slice(0, i), hashHex = vkey.slice(i + 1, j), key64 = vkey.slice(j + 1);
  if (!/^[0-9a-f]{8}$/.test(hashHex)) fail("verifier key: malformed hash");
  let key;
  try { key = b64(key64); } catch { fail("verifier key: malformed base64"); }
  if (key.length !== 33 || key[0] !== 1) fail("verifier key: not an Ed25519 key");
  const h = await sha256(enc.encode(name + "\n"), key);
  const id = h.slice(0, 4);
  const hex = Array.from(id, (x) => x.toString(16).padStart(2, "0")).join("");
  if (hex !== hashHex) fail("verifier key: hash does not match the key");
  return { name, id, pub: key.slice(1) };
}

// verifyCheckpoint checks the note's signature by key and returns its tree
// size and root.
async function verifyCheckpoint(text, key) {
  if (text.length > 8192) fail("checkpoint: too large");
  const split = text.indexOf("\n\n");
  if (split < 0) fail("checkpoint: no signature block");
  const body = text.slice(0, split + 1);
  const sigs = text.slice(split + 2).split("\n");
  if (sigs[sigs.length - 1] !== "") fail("checkpoint: signature block does not end in a newline");
  let signed = false;
  for (const line of sigs.slice(0, -1)) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) fail("checkpoint: malformed signature line");
    if (m[1] !== key.name) continue;
    let sig;
    try { sig = b64(m[2]); } catch { fail("checkpoint: malformed signature"); }
    if (sig.length !== 4 + 64 || !equal(sig.slice(0, 4), key.id)) continue;
    const pub = await crypto.subtle.importKey("raw", key.pub, { name: "Ed25519" }, false, ["verify"]);
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, pub, sig.slice(4), enc.encode(body)))) {
      fail("checkpoint: the signature does not verify");
    }
    signed = true;
  }
  if (!signed) fail("checkpoint: not signed by the log's key");
  const lines = body.split("\n");
  if (lines.length < 4) fail("checkpoint: fewer than three lines");
  if (lines[0] !== key.name) fail("checkpoint: origin is not the key's name");
  if (!/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) fail("checkpoint: malformed size");
  const size = Number(lines[1]);
  let root;
  try { root = b64(lines[2]); } catch { fail("checkpoint: malformed root"); }
  if (root.length !== 32) fail("checkpoint: malformed root");
  return { size, root };
}

// rootFromInclusion computes RFC 9162 section 2.1.3.2's root from a leaf
// hash, its index, the tree size and the audit path (leaf to root).
async function rootFromInclusion(index, size, leaf, path) {
  if (!(index >= 0 && index < size)) fail("proof: index outside the tree");
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (p.length !== 32) fail("proof: malformed hash");
    if (sn === 0) fail("proof: longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(Uint8Array.of(1), p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await sha256(Uint8Array.of(1), r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) fail("proof: shorter than the tree is deep");
  return r;
}

// shownText is text from the log as the page shows it, as the server's
// pages do (console's shown): each control or format character but a line
// break, CR or tab written as its Go escape ("\u202e"). Raw, a bidi
// override in a claim reorders the rest of the entry's line as the reader
// sees it.
export function shownText(s) {
  const short = { "\x07": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v" };
  return s.replace(/[\p{Cc}\p{Cf}]/gu, (c) => {
    if (c === "\n" || c === "\r" || c === "\t") return c;
    if (short[c]) return short[c];
    const n = c.codePointAt(0);
    if (n < 0x80) return "\\x" + n.toString(16).padStart(2, "0");
    if (n <= 0xffff) return "\\u" + n.toString(16).padStart(4, "0");
    return "\\U" + n.toString(16).padStart(8, "0");
  });
}

// verifyInclusion checks everything a proof page shows. data is
// {index, entry (base64 of the entry's exact bytes), proof: [base64…],
// checkpoint (the signed note's text), key (verifier key)}. It resolves to
// {ok: true, size, entry (the entry's text)} or {ok: false, reason}.
export async function verifyInclusion(data) {
  try {
    if (typeof data !== "object" || data === null) fail("no proof data");
    const key = await parseVerifierKey(String(data.key));
    const cp = await verifyCheckpoint(String(data.checkpoint), key);
    const entry = b64(String(data.entry));
    const text = new TextDecoder("utf-8", { fatal: true }).decode(entry);
    const parsed = JSON.parse(text);
    if (parsed.index !== data.index) fail("entry: its index is not the one shown");
    if (!Array.isArray(data.proof)) fail("proof: not a list");
    const path = data.proof.map((h) => b64(String(h)));
    const leaf = await sha256(Uint8Array.of(0), entry);
    const root = await rootFromInclusion(data.index, cp.size, leaf, path);
    if (!equal(root, cp.root)) fail("proof: the path does not lead to the checkpoint's root");
    return { ok: true, size: cp.size, entry: text };
  } catch (e) {
    if (e instanceof Failure) return { ok: false, reason: e.message };
    return { ok: false, reason: "malformed: " + (e && e.message ? e.message : String(e)) };
  }
}
