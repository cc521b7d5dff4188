'use strict';
// Helpers shared by index.js (main) and post.js (post) of the mayfly GitHub
// Action. Pure Node, no dependencies: this is what @actions/core does, kept
// to the few calls the action needs.
//
// Nothing here ever writes a token anywhere but the runner's own files
// ($GITHUB_ENV, $GITHUB_STATE) and the ::add-mask:: command.

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');
const os = require('os');
const path = require('path');
const tls = require('tls');

// A mayfly job token: "mfy_" + 30 base62 + 6 base62 checksum (SPEC section 2).
const JOB_TOKEN_RE = /^mfy_[0-9A-Za-z]{36}$/;
// A policy grant name.
const GRANT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

// input reads an action input the way the runner passes it:
// INPUT_<NAME upper-cased, spaces as "_", hyphens kept>.
function input(name) {
  const v = process.env['INPUT_' + name.replace(/ /g, '_').toUpperCase()];
  return (v || '').trim();
}

function boolInput(name, def) {
  const v = input(name).toLowerCase();
  if (v === '') return def;
  if (['true', 'yes', '1', 'on'].includes(v)) return true;
  if (['false', 'no', '0', 'off'].includes(v)) return false;
  throw new Error(`input ${name}: ${JSON.stringify(v)} is not a boolean (true or false)`);
}

// escapeData/escapeProperty: the workflow-command encoding of the runner.
function escapeData(s) {
  return String(s).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

// out writes one line to stdout synchronously, so workflow commands keep
// their order with respect to each other and to the child's output.
function out(line) {
  fs.writeSync(1, line + '\n');
}

// Every line is escaped like a command's data: a line break in a message
// (a server-supplied field) would start a line the runner reads as a
// workflow command.
function info(msg) { out(escapeData(msg)); }
function warning(msg) { out('::warning::' + escapeData(msg)); }
function error(msg) { out('::error::' + escapeData(msg)); }

// addMask asks the runner to replace value by *** in the log from now on.
function addMask(value) {
  if (value) out('::add-mask::' + escapeData(value));
}

// appendKeyValue appends NAME<<DELIM\nvalue\nDELIM to a runner file command
// file ($GITHUB_ENV, $GITHUB_STATE, $GITHUB_OUTPUT): the heredoc form, with
// a random delimiter that neither the name nor the value may contain, so a
// value can never inject a second variable.
function appendKeyValue(envName, key, value) {
  const file = process.env[envName];
  if (!file) throw new Error(`$${envName} is not set (is this running in GitHub Actions?)`);
  value = String(value);
  const delim = 'ghadelimiter_' + crypto.randomUUID();
  if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) throw new Error(`bad name ${JSON.stringify(key)} for $${envName}`);
  if (value.includes(delim)) throw new Error(`value for ${key} contains the delimiter`);
  fs.appendFileSync(file, `${key}<<${delim}${os.EOL}${value}${os.EOL}${delim}${os.EOL}`, { encoding: 'utf8', mode: 0o600 });
}

function exportVariable(name, value) { appendKeyValue('GITHUB_ENV', name, value); }
function saveState(name, value) { appendKeyValue('GITHUB_STATE', name, value); }
function setOutput(name, value) { appendKeyValue('GITHUB_OUTPUT', name, value); }
function getState(name) { return process.env['STATE_' + name] || ''; }

function addPath(dir) {
  const file = process.env.GITHUB_PATH;
  if (file) fs.appendFileSync(file, dir + os.EOL, 'utf8');
  process.env.PATH = dir + path.delimiter + (process.env.PATH || '');
}

function isLoopback(host) {
  host = host.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

// normalizeServer checks the server URL like `mayfly login` does: absolute
// http(s), plain http only to a loopback host, no user info, query or
// fragment; returned without a trailing "/".
function normalizeServer(s) {
  let u;
  try { u = new URL(s); } catch { throw new Error(`server ${JSON.stringify(s)} is not an absolute http(s) URL`); }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`server ${JSON.stringify(s)} is not an http(s) URL`);
  if (u.username || u.password || u.search || u.hash) throw new Error('server URL may not carry user info, a query or a fragment');
  if (u.protocol === 'http:' && !isLoopback(u.hostname)) throw new Error(`server ${JSON.stringify(s)}: plain http is allowed only to a loopback address`);
  return s.replace(/\/+$/, '');
}

// proxyFor returns the proxy (a URL) that an https request to url goes
// through, as Go's http.ProxyFromEnvironment, which `mayfly login` uses,
// decides: HTTPS_PROXY (or https_proxy), unless NO_PROXY (or no_proxy)
// names the host (a name and its subdomains, ".name" or "*.name" for
// subdomains only, an address, a CIDR, "*"; a port given there is not
// compared). Loopback and plain http (which mayfly sends only
// to loopback) never go through one. null: connect directly.
function proxyFor(url, env = process.env) {
  const p = env.HTTPS_PROXY || env.https_proxy;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (url.protocol !== 'https:' || !p || isLoopback(host)) return null;
  for (let n of (env.NO_PROXY || env.no_proxy || '').split(',')) {
    n = n.trim().toLowerCase();
    if (!n) continue;
    if (n === '*') return null;
    if (n.includes('/')) {
      const [addr, bits] = n.split('/');
      const type = net.isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      const bl = new net.BlockList();
      try { bl.addSubnet(addr, Number(bits), type); } catch { continue; }
      if (net.isIP(host) && bl.check(host, net.isIP(host) === 6 ? 'ipv6' : 'ipv4')) return null;
      continue;
    }
    n = n.replace(/^\[(.*)\](:\d+)?$/, '$1').replace(/^([^:]+):\d+$/, '$1').replace(/^\*\./, '.');
    if (n.startsWith('.') ? host.endsWith(n) : host === n || host.endsWith('.' + n)) return null;
  }
  return new URL(p.includes('://') ? p : 'http://' + p);
}

// tunnel opens a CONNECT tunnel through proxy to host:port and resolves to
// its socket.
function tunnel(proxy, host, port, timeoutMs) {
  return new Promise((resolve, reject) => {
    const headers = { Host: `${host}:${port}` };
    if (proxy.username) {
      const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
      headers['Proxy-Authorization'] = 'Basic ' + Buffer.from(cred).toString('base64');
    }
    const req = (proxy.protocol === 'https:' ? https : http).request({
      host: proxy.hostname.replace(/^\[|\]$/g, ''), port: proxy.port || (proxy.protocol === 'https:' ? 443 : 80),
      method: 'CONNECT', path: `${host.includes(':') ? `[${host}]` : host}:${port}`, headers, timeout: timeoutMs,
    });
    req.on('connect', (res, socket) => {
      if (res.statusCode === 200) {
        resolve(socket);
        return;
      }
      socket.destroy();
      reject(new Error(`proxy ${proxy.host} answered HTTP ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error(`proxy ${proxy.host} timed out after ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new Error(`proxy ${proxy.host}: ${e.code || e.message}`)));
    req.end();
  });
}

// revoke POSTs token=<t> to <server>/v1/revoke (RFC 7009; holding the token
// is enough), through HTTPS_PROXY as `mayfly login` reached the server
// (proxyFor). It resolves to the HTTP status (and a 429's Retry-After) and
// never rejects: the caller decides what a failure means. The token is
// never part of a message.
function revoke(server, token, caFile, timeoutMs = 15000) {
  return new Promise((resolve) => {
    let url;
    try {
      url = new URL(normalizeServer(server) + '/v1/revoke');
    } catch (e) {
      resolve({ ok: false, reason: e.message });
      return;
    }
    const body = new URLSearchParams({ token, token_type_hint: 'access_token' }).toString();
    const opts = {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        'Content-Length': Buffer.byteLength(body),
        'User-Agent': 'mayfly-action',
      },
      timeout: timeoutMs,
    };
    const mod = url.protocol === 'https:' ? https : http;
    if (url.protocol === 'https:' && caFile) {
      try {
        opts.ca = fs.readFileSync(caFile);
      } catch (e) {
        resolve({ ok: false, reason: `reading CA ${caFile}: ${e.code || e.message}` });
        return;
      }
    }
    let done = false;
    const finish = (r) => { if (!done) { done = true; resolve(r); } };
    let proxy;
    try {
      proxy = proxyFor(url);
    } catch (e) {
      finish({ ok: false, reason: `HTTPS_PROXY: ${e.message}` });
      return;
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // send makes the request, inside a proxy's tunnel when given its socket:
    // TLS runs to the server through it, its certificate checked against the
    // server's name as without a proxy.
    const send = (socket) => {
      if (socket) {
        opts.createConnection = () => tls.connect({ socket, host, servername: net.isIP(host) ? undefined : host, ca: opts.ca });
      }
      const req = mod.request(url, opts, (res) => {
        res.resume();
        res.on('end', () => finish({ ok: res.statusCode === 200, status: res.statusCode, retryAfter: res.headers['retry-after'], reason: `HTTP ${res.statusCode}` }));
        res.on('error', (e) => finish({ ok: false, reason: e.code || e.message }));
      });
      req.on('timeout', () => { req.destroy(new Error(`timed out after ${timeoutMs} ms`)); });
      req.on('error', (e) => finish({ ok: false, reason: e.code || e.message }));
      req.end(body);
    };
    if (!proxy) {
      send(null);
      return;
    }
    tunnel(proxy, host, url.port || 443, timeoutMs).then(send, (e) => finish({ ok: false, reason: e.message }));
  });
}

module.exports = {
  JOB_TOKEN_RE, GRANT_RE, input, boolInput, escapeData, out, info, warning, error, addMask,
  appendKeyValue, exportVariable, saveState, setOutput, getState, addPath, isLoopback, normalizeServer, proxyFor, revoke,
};
