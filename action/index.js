'use strict';
// Main step of the mayfly GitHub Action (action.yml): find or install a
// mayfly binary (a release archive whose checksum is verified, or `go
// install` when asked), run `mayfly login --format json` (which fetches this job's
// ID token from ACTIONS_ID_TOKEN_REQUEST_URL itself and exchanges it), mask
// the job token, save it for post.js (which revokes it at the end of the
// job, even a failed one), and export MAYFLY_TOKEN / MAYFLY_GATEWAY.
//
// The token is written only to: the ::add-mask:: command (first), $GITHUB_STATE
// and, with export-env, $GITHUB_ENV. Never to a log line or an output.

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const lib = require('./lib');
const { installRelease } = require('./install');

// The Go module `go install` fetches. Adjust (or set MAYFLY_GO_MODULE) if
// mayfly is published under another module path or a fork is used.
const GO_MODULE = process.env.MAYFLY_GO_MODULE || 'github.com/mayfly-sh/mayfly';

function isExecutable(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

// which finds name on PATH: on Windows as NAME.exe (a bare NAME is no
// program there; .bat and .cmd are left out, as spawnSync runs them only
// through a shell).
function which(name) {
  const file = process.platform === 'win32' ? name + '.exe' : name;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, file);
    if (isExecutable(p)) return p;
  }
  return '';
}

function tempDir() {
  const base = process.env.RUNNER_TEMP || os.tmpdir();
  return fs.mkdtempSync(path.join(base, 'mayfly-'));
}

// RELEASES is where release archives and checksums.txt are downloaded
// from (the release-url input overrides it, e.g. for a mirror).
const RELEASES = 'https://github.com/mayfly-sh/mayfly/releases/download';

// findMayfly returns the binary to run and whether it was installed now:
// mayfly-path; else, with a version, the release archive (checksum
// verified), or `go install` when install is "go"; else mayfly on PATH.
async function findMayfly(version) {
  const given = lib.input('mayfly-path');
  if (given) {
    const p = path.resolve(given);
    if (!isExecutable(p)) throw new Error(`mayfly-path ${given}: not an executable file`);
    return { bin: p, installed: false };
  }
  const how = lib.input('install') || 'release';
  if (how !== 'release' && how !== 'go') throw new Error(`install must be "release" or "go", not ${JSON.stringify(how)}`);
  if (!version) {
    const onPath = which('mayfly');
    if (onPath) return { bin: onPath, installed: false };
    if (how === 'release') {
      throw new Error('no mayfly binary: set version (a release tag, e.g. v1.2.3) to download a release, ' +
        'set mayfly-path, put mayfly on PATH, or set install: go with Go set up (actions/setup-go)');
    }
  }
  if (how === 'release') {
    const bin = await installRelease({
      version, base: lib.input('release-url') || RELEASES, sha256: lib.input('sha256'), dir: tempDir(), info: lib.info,
    });
    return { bin, installed: true };
  }
  const go = which('go');
  if (!go) throw new Error('install: go needs Go on the runner (actions/setup-go)');
  const v = version || 'latest';
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(v)) throw new Error(`version ${JSON.stringify(v)} is not a module version`);
  const gobin = tempDir();
  lib.info(`mayfly: go install ${GO_MODULE}/cmd/mayfly@${v}`);
  const r = spawnSync(go, ['install', `${GO_MODULE}/cmd/mayfly@${v}`], {
    env: { ...process.env, GOBIN: gobin },
    stdio: ['ignore', 2, 2],
    timeout: 10 * 60 * 1000,
  });
  if (r.error || r.status !== 0) {
    throw new Error(`go install ${GO_MODULE}/cmd/mayfly@${v} failed (${r.error ? r.error.message : 'exit ' + r.status})`);
  }
  const bin = path.join(gobin, process.platform === 'win32' ? 'mayfly.exe' : 'mayfly');
  if (!isExecutable(bin)) throw new Error(`go install did not produce ${bin}`);
  return { bin, installed: true };
}

// caFile returns the path of the CA to trust ('' for the system roots):
// PEM text is written to a private temporary file.
function caFile() {
  const v = lib.input('ca-cert') || (process.env.MAYFLY_CACERT || '').trim();
  if (!v) return { file: '', dir: '' };
  if (v.includes('-----BEGIN')) {
    const dir = tempDir();
    const file = path.join(dir, 'ca.pem');
    fs.writeFileSync(file, v.replace(/\r\n/g, '\n') + '\n', { mode: 0o600 });
    return { file, dir };
  }
  const file = path.resolve(v);
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw new Error(`ca-cert: ${v} is neither PEM text nor a readable file`);
  }
  return { file, dir: '' };
}

function ttlArg(s) {
  if (!s) return '';
  if (/^\d+$/.test(s)) return s + 's';
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) return s;
  throw new Error(`ttl ${JSON.stringify(s)} is not a duration ("10m") or a number of seconds`);
}

async function main() {
  const grants = lib.input('grants').split(/[\s,]+/).filter(Boolean);
  if (grants.length === 0) throw new Error('input grants is required (one or more grant names)');
  for (const g of grants) {
    if (!lib.GRANT_RE.test(g)) throw new Error(`grant ${JSON.stringify(g)} is not a grant name`);
  }
  const serverIn = lib.input('server') || (process.env.MAYFLY_ADDR || '').trim();
  if (!serverIn) throw new Error('no server: set the server input or MAYFLY_ADDR');
  const server = lib.normalizeServer(serverIn);
  const exportEnv = lib.boolInput('export-env', true);
  const ttl = ttlArg(lib.input('ttl'));
  const audience = lib.input('audience');
  if (!process.env.GITHUB_STATE) throw new Error('$GITHUB_STATE is not set: this runs as a GitHub Action step');
  if (!process.env.ACTIONS_ID_TOKEN_REQUEST_URL) {
    lib.warning('ACTIONS_ID_TOKEN_REQUEST_URL is not set: does the job have `permissions: id-token: write`?');
  }

  const ca = caFile();
  const { bin, installed } = await findMayfly(lib.input('version'));

  const args = ['login', '--grant', grants.join(','), '--format', 'json', '--addr', server];
  if (ca.file) args.push('--cacert', ca.file);
  if (audience) args.push('--audience', audience);
  if (ttl) args.push('--ttl', ttl);
  const env = { ...process.env };
  // The child must not mistake an admin token of the environment for anything.
  delete env.MAYFLY_TOKEN;
  const r = spawnSync(bin, args, { env, stdio: ['ignore', 'pipe', 'inherit'], timeout: 2 * 60 * 1000, maxBuffer: 1 << 20 });
  if (r.error) throw new Error(`running ${bin}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`mayfly login failed (exit ${r.status}${r.status === 1 ? ': refused by the server, see its message above' : ''})`);
  }
  let resp;
  try {
    resp = JSON.parse(r.stdout.toString('utf8'));
  } catch {
    throw new Error('mayfly login did not print a JSON response');
  }
  const token = resp && resp.access_token;
  if (typeof token !== 'string' || !lib.JOB_TOKEN_RE.test(token)) {
    throw new Error('mayfly login: the response holds no mayfly job token');
  }

  // First thing after the token exists: the runner masks it from now on.
  lib.addMask(token);
  // Then make sure the post step can revoke it, whatever happens next.
  try {
    lib.saveState('token', token);
    lib.saveState('server', server);
    if (ca.file) lib.saveState('cacert', ca.file);
    if (ca.dir) lib.saveState('cadir', ca.dir);
  } catch (e) {
    const rv = await lib.revoke(server, token, ca.file);
    throw new Error(`could not save the token for the post step (${e.message}); revoked it ${rv.ok ? 'now' : 'FAILED: ' + rv.reason}`);
  }

  const gateway = server + '/gw';
  const leaseId = typeof resp.lease_id === 'string' ? resp.lease_id : '';
  const expiresIn = Number.isSafeInteger(resp.expires_in) ? resp.expires_in : '';
  lib.setOutput('lease-id', leaseId);
  lib.setOutput('expires-in', String(expiresIn));
  lib.setOutput('gateway', gateway);
  if (exportEnv) {
    lib.exportVariable('MAYFLY_TOKEN', token);
    lib.exportVariable('MAYFLY_GATEWAY', gateway);
    lib.exportVariable('MAYFLY_ADDR', server);
    if (ca.file) lib.exportVariable('MAYFLY_CACERT', ca.file);
  }
  if (installed) lib.addPath(path.dirname(bin));
  lib.info(`mayfly: job token issued for ${grants.join(', ')}: lease ${leaseId || '?'}, expires in ${expiresIn || '?'} s, ` +
    `gateway ${gateway}${exportEnv ? '; MAYFLY_TOKEN and MAYFLY_GATEWAY exported' : ''}; it is revoked when the job ends`);
}

main().catch((e) => {
  lib.error(`mayfly: ${e.message}`);
  process.exitCode = 1;
});


