'use strict';
// Tests of the mayfly GitHub Action: index.js and post.js run as child
// processes with the runner's environment faked (INPUT_* variables, temp
// files for $GITHUB_ENV / $GITHUB_STATE / $GITHUB_OUTPUT), a fake `mayfly`
// on mayfly-path that prints a canned login response, and a local HTTP
// server on 127.0.0.1 that records revocations.
//
//   node --test action/test/

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ACTION = path.resolve(__dirname, '..');
const TOKEN = 'mfy_' + 'Abc123XyZ0'.repeat(3) + '0a1B2c';
assert.match(TOKEN, /^mfy_[0-9A-Za-z]{36}$/);

// parseFileCommands reads a $GITHUB_ENV-style file: NAME=value lines and
// NAME<<DELIM heredocs, like the runner does.
function parseFileCommands(file) {
  const vars = {};
  if (!fs.existsSync(file)) return vars;
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') continue;
    const hd = line.match(/^([^=<]+)<<(.+)$/);
    if (hd) {
      const val = [];
      let j = i + 1;
      while (j < lines.length && lines[j] !== hd[2]) val.push(lines[j++]);
      assert.ok(j < lines.length, `unterminated heredoc for ${hd[1]}`);
      vars[hd[1]] = val.join('\n');
      i = j;
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `bad line ${JSON.stringify(line)}`);
    vars[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return vars;
}

function run(script, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ACTION, script)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// fixture makes a runner-like environment and a fake mayfly.
function fixture(t, { response, exitCode = 0, stderrLine = '' } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mayfly-action-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = {
    dir,
    env: path.join(dir, 'github_env'),
    state: path.join(dir, 'github_state'),
    output: path.join(dir, 'github_output'),
    ghpath: path.join(dir, 'github_path'),
    args: path.join(dir, 'mayfly-args'),
    childEnv: path.join(dir, 'mayfly-env'),
    fake: path.join(dir, 'fake-mayfly'),
    resp: path.join(dir, 'response.json'),
  };
  for (const p of [f.env, f.state, f.output, f.ghpath]) fs.writeFileSync(p, '');
  const body = response === undefined
    ? JSON.stringify({
      access_token: TOKEN, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer', expires_in: 600, scope: 'deploy read', lease_id: 'lse_test123',
    })
    : response;
  fs.writeFileSync(f.resp, body);
  fs.writeFileSync(f.fake, [
    '#!/bin/sh',
    `printf '%s\\n' "$@" > '${f.args}'`,
    `env > '${f.childEnv}'`,
    stderrLine ? `echo '${stderrLine}' >&2` : '',
    `cat '${f.resp}'`,
    `exit ${exitCode}`,
    '',
  ].join('\n'), { mode: 0o755 });
  f.baseEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    RUNNER_TEMP: dir,
    GITHUB_ENV: f.env,
    GITHUB_STATE: f.state,
    GITHUB_OUTPUT: f.output,
    GITHUB_PATH: f.ghpath,
    ACTIONS_ID_TOKEN_REQUEST_URL: 'http://127.0.0.1:9/actions/token',
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-token',
    'INPUT_MAYFLY-PATH': f.fake,
    'INPUT_EXPORT-ENV': 'true',
  };
  return f;
}

// revokeServer records POST /v1/revoke forms; status is what it answers
// (a list: one status per request, the last repeated), with headers.
async function revokeServer(t, status = 200, headers = {}) {
  const seen = [];
  const statuses = [].concat(status);
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, type: req.headers['content-type'], form: Object.fromEntries(new URLSearchParams(body)) });
      res.writeHead(statuses[Math.min(seen.length, statuses.length) - 1], { 'Content-Type': 'application/json', ...headers });
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  return { url: `http://127.0.0.1:${srv.address().port}`, seen };
}

// postEnv is what the runner gives the post step: the inputs again and
// STATE_<name> for every saved state.
function postEnv(f) {
  const env = { ...f.baseEnv };
  for (const [k, v] of Object.entries(parseFileCommands(f.state))) env['STATE_' + k] = v;
  return env;
}

test('login: token masked first, exported, saved; post revokes it', async (t) => {
  const rs = await revokeServer(t);
  const f = fixture(t, { stderrLine: 'mayfly: a note on stderr' });
  const env = {
    ...f.baseEnv,
    INPUT_GRANTS: 'deploy, read',
    INPUT_SERVER: rs.url + '/',
    INPUT_AUDIENCE: 'https://mayfly.example.com',
    INPUT_TTL: '600',
    MAYFLY_TOKEN: 'mfya_admin-token-that-the-child-must-not-see',
  };
  const r = await run('index.js', env);
  assert.equal(r.code, 0, r.stdout + r.stderr);

  const lines = r.stdout.split('\n');
  assert.equal(lines[0], '::add-mask::' + TOKEN, 'the first line masks the token');
  assert.equal(r.stdout.split(TOKEN).length, 2, 'the token appears once in stdout, in ::add-mask::');
  assert.ok(!r.stderr.includes(TOKEN), 'no token on stderr');
  assert.match(r.stderr, /a note on stderr/, "mayfly's stderr is passed through");
  assert.match(r.stdout, /lease lse_test123, expires in 600 s/);

  const args = fs.readFileSync(f.args, 'utf8').trim().split('\n');
  assert.deepEqual(args, ['login', '--grant', 'deploy,read', '--format', 'json', '--addr', rs.url,
    '--audience', 'https://mayfly.example.com', '--ttl', '600s']);
  const childEnv = fs.readFileSync(f.childEnv, 'utf8');
  assert.match(childEnv, /^ACTIONS_ID_TOKEN_REQUEST_URL=/m, 'the child gets the request URL');
  assert.doesNotMatch(childEnv, /^MAYFLY_TOKEN=/m, 'an admin MAYFLY_TOKEN is not passed to login');

  const ghEnv = parseFileCommands(f.env);
  assert.equal(ghEnv.MAYFLY_TOKEN, TOKEN);
  assert.equal(ghEnv.MAYFLY_GATEWAY, rs.url + '/gw');
  assert.equal(ghEnv.MAYFLY_ADDR, rs.url);
  assert.equal(ghEnv.MAYFLY_CACERT, undefined);
  assert.match(fs.readFileSync(f.env, 'utf8'), /^MAYFLY_TOKEN<<ghadelimiter_[0-9a-f-]{36}$/m, 'heredoc form');
  assert.deepEqual(parseFileCommands(f.output), { 'lease-id': 'lse_test123', 'expires-in': '600', gateway: rs.url + '/gw' });
  const state = parseFileCommands(f.state);
  assert.equal(state.token, TOKEN);
  assert.equal(state.server, rs.url);
  assert.equal(fs.readFileSync(f.ghpath, 'utf8'), '', 'an existing binary is not added to PATH');

  const p = await run('post.js', postEnv(f));
  assert.equal(p.code, 0, p.stdout + p.stderr);
  assert.ok(!(p.stdout + p.stderr).includes(TOKEN));
  assert.match(p.stdout, /revoked/);
  assert.equal(rs.seen.length, 1);
  assert.equal(rs.seen[0].method, 'POST');
  assert.equal(rs.seen[0].url, '/v1/revoke');
  assert.equal(rs.seen[0].type, 'application/x-www-form-urlencoded');
  assert.equal(rs.seen[0].form.token, TOKEN);
});

test('export-env false: nothing in $GITHUB_ENV, state and outputs still written', async (t) => {
  const f = fixture(t);
  const r = await run('index.js', { ...f.baseEnv, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', 'INPUT_EXPORT-ENV': 'false' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(fs.readFileSync(f.env, 'utf8'), '');
  assert.equal(parseFileCommands(f.state).token, TOKEN);
  assert.equal(parseFileCommands(f.output)['lease-id'], 'lse_test123');
});

test('server from MAYFLY_ADDR; ca-cert as PEM text is written to a private file, used, and removed by post', async (t) => {
  const rs = await revokeServer(t);
  const f = fixture(t);
  const pem = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----';
  const r = await run('index.js', { ...f.baseEnv, INPUT_GRANTS: 'deploy', MAYFLY_ADDR: rs.url, 'INPUT_CA-CERT': pem });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const state = parseFileCommands(f.state);
  assert.ok(state.cacert && state.cacert.startsWith(f.dir), 'CA file under RUNNER_TEMP');
  assert.equal(fs.readFileSync(state.cacert, 'utf8'), pem + '\n');
  assert.equal(fs.statSync(state.cacert).mode & 0o777, 0o600);
  const args = fs.readFileSync(f.args, 'utf8').trim().split('\n');
  assert.deepEqual(args.slice(args.indexOf('--cacert'), args.indexOf('--cacert') + 2), ['--cacert', state.cacert]);
  assert.ok(!args.includes('--audience'), 'audience left to mayfly (MAYFLY_AUDIENCE, then the server)');
  assert.equal(parseFileCommands(f.env).MAYFLY_CACERT, state.cacert);
  const p = await run('post.js', postEnv(f));
  assert.equal(p.code, 0);
  assert.equal(rs.seen.length, 1, 'http server: the CA is not needed');
  assert.ok(!fs.existsSync(state.cadir), 'temporary CA removed');
});

test('refused login: the job step fails, nothing saved', async (t) => {
  const f = fixture(t, { response: '', exitCode: 1, stderrLine: 'mayfly: token exchange refused: invalid_scope' });
  const r = await run('index.js', { ...f.baseEnv, INPUT_GRANTS: 'nope', INPUT_SERVER: 'http://127.0.0.1:1' });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /^::error::mayfly: mayfly login failed \(exit 1: refused/m);
  assert.match(r.stderr, /invalid_scope/);
  assert.equal(fs.readFileSync(f.state, 'utf8'), '');
  assert.equal(fs.readFileSync(f.env, 'utf8'), '');
  const p = await run('post.js', postEnv(f));
  assert.equal(p.code, 0);
  assert.match(p.stdout, /nothing to revoke/);
});

test('a response without a job token is refused and never echoed', async (t) => {
  const secret = 'sekrit-not-a-mayfly-token-0123456789';
  const f = fixture(t, { response: JSON.stringify({ access_token: secret + '\nMAYFLY_GATEWAY=evil', lease_id: 'lse_x' }) });
  const r = await run('index.js', { ...f.baseEnv, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1' });
  assert.equal(r.code, 1);
  assert.ok(!(r.stdout + r.stderr).includes(secret));
  assert.match(r.stdout, /::error::mayfly: mayfly login: the response holds no mayfly job token/);
  assert.equal(fs.readFileSync(f.env, 'utf8'), '');
  assert.equal(fs.readFileSync(f.state, 'utf8'), '');
});

test('a server-supplied field cannot start a workflow command in the log', async (t) => {
  const f = fixture(t, { response: JSON.stringify({
    access_token: TOKEN, token_type: 'Bearer', expires_in: 600, lease_id: 'lse_x\n::stop-commands::pwned\r\n::warning::forged 100%0A',
  }) });
  const r = await run('index.js', { ...f.baseEnv, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const lines = r.stdout.split('\n').filter(Boolean);
  assert.deepEqual(lines.filter((l) => l.startsWith('::')).map((l) => l.split('::')[1]), ['add-mask'], r.stdout);
  assert.match(r.stdout, /lease lse_x%0A::stop-commands::pwned%0D%0A::warning::forged 100%250A,/);
});

test('bad inputs fail before anything runs', async (t) => {
  const f = fixture(t);
  const cases = [
    [{ INPUT_GRANTS: '' , INPUT_SERVER: 'http://127.0.0.1:1' }, /grants is required/],
    [{ INPUT_GRANTS: 'a\nMAYFLY_X=1', INPUT_SERVER: 'http://127.0.0.1:1' }, /not a grant name/],
    [{ INPUT_GRANTS: 'deploy' }, /no server/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://mayfly.example.com' }, /plain http is allowed only to a loopback/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'https://u:p@mayfly.example.com' }, /user info/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', INPUT_TTL: 'forever' }, /ttl "forever"/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', 'INPUT_EXPORT-ENV': 'maybe' }, /not a boolean/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', 'INPUT_CA-CERT': '/no/such/ca.pem' }, /neither PEM text nor a readable file/],
    [{ INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', 'INPUT_MAYFLY-PATH': '/no/such/mayfly' }, /not an executable/],
  ];
  for (const [inputs, want] of cases) {
    const r = await run('index.js', { ...f.baseEnv, ...inputs });
    assert.equal(r.code, 1, JSON.stringify(inputs));
    assert.match(r.stdout, want, JSON.stringify(inputs));
  }
  assert.ok(!fs.existsSync(f.args), 'mayfly never ran');
});

test('no mayfly-path, no mayfly and no Go on PATH: a clear error', async (t) => {
  const f = fixture(t);
  const empty = fs.mkdtempSync(path.join(f.dir, 'bin-'));
  const env = { ...f.baseEnv, PATH: empty, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1' };
  delete env['INPUT_MAYFLY-PATH'];
  const r = await run('index.js', env);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /no mayfly binary: set version \(a release tag, e\.g\. v1\.2\.3\) to download a release/);
});

// releaseServer serves a release like GitHub does (the archive behind a
// redirect) on 127.0.0.1: an archive holding a fake mayfly, and a
// checksums.txt that lists sum (the archive's real SHA-256 by default).
async function releaseServer(t, f, { sum } = {}) {
  const { archiveName } = require('../install');
  const name = archiveName('v1.2.3');
  const stage = fs.mkdtempSync(path.join(f.dir, 'stage-'));
  fs.copyFileSync(f.fake, path.join(stage, process.platform === 'win32' ? 'mayfly.exe' : 'mayfly'));
  fs.chmodSync(path.join(stage, 'mayfly'), 0o755);
  const archive = path.join(f.dir, name);
  const { spawnSync } = require('node:child_process');
  const tr = spawnSync('tar', ['-czf', archive, '-C', stage, 'mayfly']);
  assert.equal(tr.status, 0, String(tr.stderr));
  const data = fs.readFileSync(archive);
  const real = require('node:crypto').createHash('sha256').update(data).digest('hex');
  const seen = [];
  const srv = http.createServer((req, res) => {
    seen.push(req.url);
    if (req.url === `/releases/download/v1.2.3/${name}`) {
      res.writeHead(302, { Location: `/objects/${name}` });
      res.end();
    } else if (req.url === `/objects/${name}`) {
      res.end(data);
    } else if (req.url === '/releases/download/v1.2.3/checksums.txt') {
      res.end(`${'0'.repeat(64)}  mayfly_1.2.3_plan9_mips.tar.gz\n${sum || real}  ${name}\n`);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  return { url: `http://127.0.0.1:${srv.address().port}/releases/download`, sha: real, seen };
}

test('version: the release archive is downloaded, verified against checksums.txt and run', async (t) => {
  const f = fixture(t);
  const rel = await releaseServer(t, f);
  const empty = fs.mkdtempSync(path.join(f.dir, 'bin-'));
  const env = { ...f.baseEnv, PATH: empty + path.delimiter + '/usr/bin:/bin', INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1',
    INPUT_VERSION: 'v1.2.3', 'INPUT_RELEASE-URL': rel.url, INPUT_SHA256: rel.sha };
  delete env['INPUT_MAYFLY-PATH'];
  const r = await run('index.js', env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /verified \(sha256 [0-9a-f]{64}\) and installed/);
  assert.equal(parseFileCommands(f.state).token, TOKEN);
  assert.ok(fs.readFileSync(f.ghpath, 'utf8').includes('mayfly-'), 'the installed binary is put on PATH');
});

test('version: an archive whose checksum does not match is never run', async (t) => {
  for (const [name, opts, input, want] of [
    ['checksums.txt disagrees', { sum: 'f'.repeat(64) }, {}, /does not match checksums\.txt.*not installed/],
    ['pinned sha256 disagrees', {}, { INPUT_SHA256: 'e'.repeat(64) }, /is not the pinned sha256 input.*not installed/],
    ['not a release tag', {}, { INPUT_VERSION: 'main' }, /is not a release tag/],
    ['plain http elsewhere', {}, { 'INPUT_RELEASE-URL': 'http://example.com/releases/download' }, /refusing to download over http:/],
  ]) {
    const f = fixture(t);
    const rel = await releaseServer(t, f, opts);
    const empty = fs.mkdtempSync(path.join(f.dir, 'bin-'));
    const env = { ...f.baseEnv, PATH: empty + path.delimiter + '/usr/bin:/bin', INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1',
      INPUT_VERSION: 'v1.2.3', 'INPUT_RELEASE-URL': rel.url, ...input };
    delete env['INPUT_MAYFLY-PATH'];
    const r = await run('index.js', env);
    assert.equal(r.code, 1, name);
    assert.match(r.stdout, want, name);
    assert.ok(!fs.existsSync(f.args), `${name}: mayfly ran`);
  }
});

test('mayfly on PATH is used when no version is asked', async (t) => {
  const f = fixture(t);
  const bin = fs.mkdtempSync(path.join(f.dir, 'bin-'));
  fs.copyFileSync(f.fake, path.join(bin, 'mayfly'));
  fs.chmodSync(path.join(bin, 'mayfly'), 0o755);
  const env = { ...f.baseEnv, PATH: bin + path.delimiter + process.env.PATH, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1' };
  delete env['INPUT_MAYFLY-PATH'];
  const r = await run('index.js', env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(parseFileCommands(f.state).token, TOKEN);
});

test('post: a failed revocation warns and never fails the job', async (t) => {
  const rs = await revokeServer(t, 503);
  const f = fixture(t);
  const base = { ...f.baseEnv, STATE_token: TOKEN };
  const p1 = await run('post.js', { ...base, STATE_server: rs.url });
  assert.equal(p1.code, 0);
  assert.match(p1.stdout, /^::warning::mayfly: could not revoke the job token .*HTTP 503/m);
  assert.equal(rs.seen.length, 3, 'retried on 5xx');
  assert.ok(!p1.stdout.includes(TOKEN));

  const p2 = await run('post.js', { ...base, STATE_server: 'http://127.0.0.1:1' });
  assert.equal(p2.code, 0);
  assert.match(p2.stdout, /^::warning::mayfly: could not revoke the job token .*ECONNREFUSED/m);

  const p3 = await run('post.js', { ...base, STATE_server: 'https://127.0.0.1:1', STATE_cacert: '/no/such/ca.pem' });
  assert.equal(p3.code, 0);
  assert.match(p3.stdout, /^::warning::.*reading CA/m);

  const p4 = await run('post.js', { ...base, STATE_token: 'not-a-token', STATE_server: rs.url });
  assert.equal(p4.code, 0);
  assert.match(p4.stdout, /^::warning::mayfly: the saved state is not a job token/m);
  assert.equal(rs.seen.length, 3, 'no request for a malformed token');
});

test('post: a 4xx answer is not retried', async (t) => {
  const rs = await revokeServer(t, 400);
  const f = fixture(t);
  const p = await run('post.js', { ...f.baseEnv, STATE_token: TOKEN, STATE_server: rs.url });
  assert.equal(p.code, 0);
  assert.equal(rs.seen.length, 1);
  assert.match(p.stdout, /::warning::.*HTTP 400/);
});

// A 429 (the server's per-address limit on revocations, shared by a CI
// fleet behind one NAT address) is asked again after its Retry-After,
// capped so that the post step stays short.
test('post: a 429 answer is retried after its Retry-After', async (t) => {
  const rs = await revokeServer(t, [429, 200], { 'Retry-After': '1' });
  const f = fixture(t);
  const start = Date.now();
  const p = await run('post.js', { ...f.baseEnv, STATE_token: TOKEN, STATE_server: rs.url });
  assert.equal(p.code, 0);
  assert.equal(rs.seen.length, 2);
  assert.ok(Date.now() - start >= 1000, 'waited for Retry-After');
  assert.match(p.stdout, /job token revoked/);
});

// On a Windows runner a program on PATH is NAME.exe: mayfly.exe
// put there by an earlier step, and go.exe by actions/setup-go, are found.
// The test runs index.js with process.platform faked as win32.
test('windows: mayfly.exe and go.exe on PATH are found', async (t) => {
  for (const [name, binName, input] of [
    ['mayfly.exe on PATH', 'mayfly.exe', {}],
    ['go.exe for install: go', 'go.exe', { INPUT_INSTALL: 'go' }],
  ]) {
    const f = fixture(t);
    const bin = fs.mkdtempSync(path.join(f.dir, 'bin-'));
    if (binName === 'go.exe') {
      // A fake go: `go install` puts the fake mayfly in $GOBIN as mayfly.exe.
      fs.writeFileSync(path.join(bin, 'go.exe'), `#!/bin/sh\ncp '${f.fake}' "$GOBIN/mayfly.exe"\n`, { mode: 0o755 });
    } else {
      fs.copyFileSync(f.fake, path.join(bin, binName));
      fs.chmodSync(path.join(bin, binName), 0o755);
    }
    const preload = path.join(f.dir, 'win32.js');
    fs.writeFileSync(preload, "Object.defineProperty(process, 'platform', { value: 'win32' });\n");
    const env = { ...f.baseEnv, PATH: bin + path.delimiter + '/usr/bin:/bin',
      NODE_OPTIONS: `--require ${preload}`, INPUT_GRANTS: 'deploy', INPUT_SERVER: 'http://127.0.0.1:1', ...input };
    delete env['INPUT_MAYFLY-PATH'];
    const r = await run('index.js', env);
    assert.equal(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    assert.equal(parseFileCommands(f.state).token, TOKEN, name);
  }
});

// selfSigned makes a certificate for name and its key with openssl (Node
// cannot write one); null when openssl is missing.
function selfSigned(dir, name) {
  const { spawnSync } = require('node:child_process');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`]);
  if (r.error || r.status !== 0) return null;
  return { cert, key };
}

// A runner that reaches the internet only through a proxy (HTTPS_PROXY,
// as `mayfly login` honours it) has the token revoked through it too, in
// a CONNECT tunnel with the server's certificate checked end to end;
// NO_PROXY is honoured.
test('post: the revocation goes through HTTPS_PROXY', async (t) => {
  const https = require('node:https');
  const net = require('node:net');
  const f = fixture(t);
  const tls = selfSigned(f.dir, 'mayfly.test');
  const other = selfSigned(fs.mkdtempSync(path.join(f.dir, 'other-')), 'mayfly.test');
  if (!tls || !other) {
    t.skip('needs openssl to make a certificate');
    return;
  }
  const revoked = [];
  const srv = https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, (req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      revoked.push(new URLSearchParams(body).get('token'));
      res.end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  // The proxy alone knows where mayfly.test is.
  const tunnels = [];
  const proxy = http.createServer((req, res) => { res.writeHead(405); res.end(); });
  proxy.on('connect', (req, sock, head) => {
    tunnels.push({ target: req.url, auth: req.headers['proxy-authorization'] || '' });
    const up = net.connect(srv.address().port, '127.0.0.1', () => {
      sock.write('HTTP/1.1 200 Connection established\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  t.after(() => proxy.close());
  const proxyURL = `http://127.0.0.1:${proxy.address().port}`;
  const server = `https://mayfly.test:${srv.address().port}`;
  const base = { ...f.baseEnv, STATE_token: TOKEN, STATE_server: server, STATE_cacert: tls.cert };

  for (const [name, env, wantTunnels, wantRevoked, wantAuth] of [
    ['HTTPS_PROXY', { HTTPS_PROXY: proxyURL }, 1, 1, ''],
    ['https_proxy with credentials', { https_proxy: proxyURL.replace('//', '//u%40x:p%3Aw@') }, 2, 2,
      'Basic ' + Buffer.from('u@x:p:w').toString('base64')],
    ['NO_PROXY names the server', { HTTPS_PROXY: proxyURL, NO_PROXY: 'example.com,.test' }, 2, 2, null],
    // The tunnel's end is checked: a certificate the CA did not sign is refused.
    ['another CA', { HTTPS_PROXY: proxyURL, STATE_cacert: other.cert }, 5, 2, null],
  ]) {
    const p = await run('post.js', { ...base, ...env });
    assert.equal(p.code, 0, name);
    assert.equal(tunnels.length, wantTunnels, `${name}: tunnels ${JSON.stringify(tunnels)}; ${p.stdout}`);
    if (wantAuth !== null) {
      assert.equal(tunnels.at(-1).target, `mayfly.test:${srv.address().port}`, name);
      assert.equal(tunnels.at(-1).auth, wantAuth, name);
    }
    assert.equal(revoked.length, wantRevoked, `${name}: ${p.stdout}`);
    assert.ok(!p.stdout.includes(TOKEN), name);
  }
  assert.deepEqual(revoked, [TOKEN, TOKEN]);
});
