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
const os = require('os');
const path = require('path');

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

// revoke POSTs token=<t> to <server>/v1/revoke (RFC 7009; holding the token
// is enough). It resolves to the HTTP status and never rejects: the caller
// decides what a failure means. The token is never part of a message.
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
    const req = mod.request(url, opts, (res) => {
      res.resume();
      res.on('end', () => finish({ ok: res.statusCode === 200, status: res.statusCode, reason: `HTTP ${res.statusCode}` }));
      res.on('error', (e) => finish({ ok: false, reason: e.code || e.message }));
    });
    req.on('timeout', () => { req.destroy(new Error(`timed out after ${timeoutMs} ms`)); });
    req.on('error', (e) => finish({ ok: false, reason: e.code || e.message }));
    req.end(body);
  });
}

module.exports = {
  JOB_TOKEN_RE, GRANT_RE, input, boolInput, escapeData, out, info, warning, error, addMask,
  appendKeyValue, exportVariable, saveState, setOutput, getState, addPath, isLoopback, normalizeServer, revoke,
};
