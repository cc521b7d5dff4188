'use strict';
// Installing mayfly from a release: download the archive for this runner's
// OS and architecture and the release's checksums.txt, check the archive's
// SHA-256 against it (and against the sha256 input when one is given),
// unpack it with tar, and return the binary. Nothing downloaded runs before
// its checksum matched.

const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');

const MAX_DOWNLOAD = 200 << 20; // an archive is ~15 MB; bound what is read
const TIMEOUT_MS = 2 * 60 * 1000;
const VERSION_RE = /^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;

// archiveName is GoReleaser's name_template in .goreleaser.yaml.
function archiveName(version, platform = process.platform, arch = process.arch) {
  const os = { linux: 'linux', darwin: 'darwin', win32: 'windows' }[platform];
  const cpu = { x64: 'amd64', arm64: 'arm64' }[arch];
  if (!os || !cpu) throw new Error(`no mayfly release for ${platform}/${arch}`);
  const ext = os === 'windows' ? 'zip' : 'tar.gz';
  return `mayfly_${version.replace(/^v/, '')}_${os}_${cpu}.${ext}`;
}

// isLoopbackURL allows plain http only to this machine (tests, mirrors on
// the runner itself).
function checkURL(u) {
  const url = new URL(u);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname)) return url;
  throw new Error(`refusing to download over ${url.protocol} from ${url.host}: use https`);
}

// download fetches url (following up to 5 redirects, https only) into a
// Buffer of at most MAX_DOWNLOAD bytes.
function download(u, redirects = 5) {
  return new Promise((resolve, reject) => {
    let url;
    try {
      url = checkURL(u);
    } catch (e) {
      reject(e);
      return;
    }
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.get(url, { timeout: TIMEOUT_MS, headers: { 'User-Agent': 'mayfly-action' } }, (res) => {
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && res.headers.location) {
        res.resume();
        if (redirects <= 0) {
          reject(new Error(`${u}: too many redirects`));
          return;
        }
        download(new URL(res.headers.location, url).toString(), redirects - 1).then(resolve, reject);
        return;
      }
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`${url.origin}${url.pathname}: HTTP ${res.statusCode}`));
        return;
      }
      const chunks = [];
      let n = 0;
      res.on('data', (c) => {
        n += c.length;
        if (n > MAX_DOWNLOAD) {
          req.destroy(new Error(`${url.pathname}: larger than ${MAX_DOWNLOAD} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url.origin}${url.pathname}: timed out`)));
    req.on('error', reject);
  });
}

// expectedSum finds name's SHA-256 in a checksums.txt ("<hex>  <name>").
function expectedSum(checksums, name) {
  for (const line of checksums.split(/\r?\n/)) {
    const m = line.match(/^([0-9a-f]{64})\s+\*?(\S+)$/);
    if (m && m[2] === name) return m[1];
  }
  throw new Error(`checksums.txt lists no ${name}`);
}

// installRelease downloads, verifies and unpacks version into dir and
// returns the binary's path. base is the releases' download URL.
async function installRelease({ version, base, sha256, dir, info }) {
  if (!VERSION_RE.test(version)) {
    throw new Error(`version ${JSON.stringify(version)} is not a release tag (vX.Y.Z); set install: go to use go install`);
  }
  if (sha256 && !/^[0-9a-f]{64}$/.test(sha256)) throw new Error('sha256 must be 64 lowercase hex digits');
  const name = archiveName(version);
  const root = base.replace(/\/+$/, '') + '/' + version + '/';
  info(`mayfly: downloading ${root}${name}`);
  const [archive, sums] = await Promise.all([download(root + name), download(root + 'checksums.txt')]);
  const got = crypto.createHash('sha256').update(archive).digest('hex');
  const want = expectedSum(sums.toString('utf8'), name);
  if (!crypto.timingSafeEqual(Buffer.from(got), Buffer.from(want))) {
    throw new Error(`${name}: SHA-256 ${got} does not match checksums.txt (${want}): not installed`);
  }
  if (sha256 && got !== sha256) {
    throw new Error(`${name}: SHA-256 ${got} is not the pinned sha256 input ${sha256}: not installed`);
  }
  const file = path.join(dir, name);
  fs.writeFileSync(file, archive, { mode: 0o600 });
  // tar unpacks .tar.gz everywhere and .zip with the bsdtar of Windows.
  const r = spawnSync('tar', ['-xf', file, '-C', dir], { stdio: ['ignore', 2, 2], timeout: TIMEOUT_MS });
  if (r.error || r.status !== 0) throw new Error(`unpacking ${name} failed (${r.error ? r.error.message : 'exit ' + r.status})`);
  fs.rmSync(file, { force: true });
  const bin = path.join(dir, process.platform === 'win32' ? 'mayfly.exe' : 'mayfly');
  if (!fs.existsSync(bin)) throw new Error(`${name} holds no mayfly binary`);
  fs.chmodSync(bin, 0o755);
  info(`mayfly: ${name} verified (sha256 ${got}) and installed`);
  return bin;
}

module.exports = { archiveName, expectedSum, installRelease, download };
