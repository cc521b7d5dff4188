'use strict';
// Post step of the mayfly GitHub Action: runs at the end of the job
// (post-if: always(), so also after a failure or a cancellation) and revokes
// the job token the main step saved in $GITHUB_STATE, by POST <server>/v1/revoke
// (RFC 7009: holding the token is enough). A failed revocation is a warning,
// never a failed job: the token dies at its expiry anyway.

const fs = require('fs');
const lib = require('./lib');

async function post() {
  const token = lib.getState('token');
  const server = lib.getState('server');
  const caFile = lib.getState('cacert');
  const caDir = lib.getState('cadir');
  try {
    if (!token) {
      lib.info('mayfly: no job token was issued, nothing to revoke');
      return;
    }
    if (!lib.JOB_TOKEN_RE.test(token) || !server) {
      lib.warning('mayfly: the saved state is not a job token and a server; not revoking');
      return;
    }
    let r;
    for (let attempt = 1; attempt <= 3; attempt++) {
      r = await lib.revoke(server, token, caFile);
      // A 4xx will not get better by asking again, but for a 429 (the
      // server's per-address limit, shared by a fleet behind one NAT
      // address): that one is asked again after its Retry-After, at most
      // 10 s, so that the post step stays short.
      const limited = r.status === 429;
      if (r.ok || (r.status >= 400 && r.status < 500 && !limited) || attempt === 3) break;
      let wait = 500 * attempt;
      if (limited) {
        const after = Number.parseInt(r.retryAfter, 10);
        wait = Number.isFinite(after) && after > 0 ? Math.min(after, 10) * 1000 : 1000;
      }
      await new Promise((res) => setTimeout(res, wait));
    }
    if (r.ok) {
      lib.info(`mayfly: job token revoked at ${server}`);
    } else {
      lib.warning(`mayfly: could not revoke the job token at ${server} (${r.reason}); it stays usable until it expires`);
    }
  } finally {
    if (caDir) fs.rmSync(caDir, { recursive: true, force: true });
  }
}

post().catch((e) => {
  lib.warning(`mayfly: revoking the job token: ${e.message}`);
}).finally(() => {
  process.exitCode = 0;
});
