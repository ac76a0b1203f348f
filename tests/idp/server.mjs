// A small, real OpenID Connect / OAuth 2.0 authorization server for sluice's
// end-to-end tests, built on the `oidc-provider` package (see README.md).
//
//   node tests/idp/server.mjs
//
// Prints exactly one line to stdout once listening:
//
//   IDP_READY http://127.0.0.1:<port>
//
// (the issuer URL). Everything else (warnings, logs) goes to stderr.
// Exits on SIGTERM/SIGINT, and when its stdin (if it is a pipe or socket)
// reaches end-of-file, so a test harness that drops the child's stdin stops it.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its "NOTICE" lines with console.info, i.e. to stdout.
// stdout is reserved for the single IDP_READY line, so send them to stderr
// (only when IDP_LOG=1; otherwise drop them).
const LOG = process.env.IDP_LOG === '1';
console.info = LOG ? (...args) => console.error(...args) : () => {};
console.log = (...args) => console.error(...args);
const log = (...args) => { if (LOG) console.error('[idp]', ...args); };

// ---------------------------------------------------------------------------
// Configuration from the environment (all optional)
// ---------------------------------------------------------------------------

function envInt(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`idp: ${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

const PORT = envInt('IDP_PORT', 0);
const ACCESS_TOKEN_TTL = envInt('IDP_ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = envInt('IDP_ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = envInt('IDP_REFRESH_TOKEN_TTL', 14 * 24 * 3600);
const AUTH_CODE_TTL = envInt('IDP_AUTH_CODE_TTL', 60);
// oidc-provider's default clockTolerance (15 s) also applies to its own opaque
// tokens: an access token would still be accepted by userinfo/introspection up
// to 15 s after `exp`. 0 makes the TTLs exact.
const CLOCK_TOLERANCE = envInt('IDP_CLOCK_TOLERANCE', 0);

const DEFAULT_CLIENTS = [{
  client_id: 'sluice',
  client_secret: 'sluice-test-secret',
  redirect_uris: ['http://127.0.0.1:8080/callback'],
}];

function loadClients() {
  let clients = DEFAULT_CLIENTS;
  if (process.env.IDP_CLIENTS) {
    try {
      clients = JSON.parse(process.env.IDP_CLIENTS);
    } catch (err) {
      console.error(`idp: IDP_CLIENTS is not valid JSON: ${err.message}`);
      process.exit(2);
    }
    if (!Array.isArray(clients) || clients.length === 0) {
      console.error('idp: IDP_CLIENTS must be a non-empty JSON array of client metadata objects');
      process.exit(2);
    }
  }
  // Defaults per client: confidential web client, code flow + refresh tokens,
  // client_secret_basic at the token endpoint.
  return clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    ...c,
  }));
}

// RS256 signing key: generated at start-up, or loaded from / saved to
// IDP_SIGNING_KEY_FILE (a private JWK as JSON) so that a restarted server
// keeps the same `kid` and key.
function loadSigningKey() {
  const file = process.env.IDP_SIGNING_KEY_FILE;
  if (file && fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
  jwk.kid = crypto.createHash('sha256').update(`${pub.n}.${pub.e}`).digest('base64url').slice(0, 16);
  jwk.use = 'sig';
  jwk.alg = 'RS256';
  if (file) fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

// ---------------------------------------------------------------------------
// Accounts: any login name is accepted (the password is ignored)
// ---------------------------------------------------------------------------

const ACCOUNTS = {
  alice: { name: 'Alice Analyst', groups: ['analyst'], tenant: 'acme' },
  carol: { name: 'Carol Compliance', groups: ['compliance'], tenant: 'acme' },
  root: { name: 'Root Admin', groups: ['admin'], tenant: 'acme' },
};

function accountClaims(id) {
  const known = ACCOUNTS[id] || { name: id, groups: [], tenant: 'acme' };
  return {
    sub: id,
    name: known.name,
    preferred_username: id,
    email: `${id}@acme.test`,
    email_verified: true,
    groups: [...known.groups],
    tenant: known.tenant,
  };
}

async function findAccount(_ctx, id) {
  if (typeof id !== 'string' || id === '') return undefined;
  return {
    accountId: id,
    // Scope/claim filtering is done by oidc-provider using `claims` below.
    async claims() { return accountClaims(id); },
  };
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

function providerConfig(clients) {
  return {
    clients,
    findAccount,
    clockTolerance: CLOCK_TOLERANCE,
    jwks: { keys: [loadSigningKey()] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    // Scope -> claims. `groups` and `tenant` are tied to `openid`, so they are
    // always in the id_token and the userinfo response.
    claims: {
      openid: ['sub', 'groups', 'tenant'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    // Put every granted scope's claims into the id_token too (by default,
    // in the code flow, they would only be served by userinfo).
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    // Refresh token rotation on every use. Re-using a rotated (consumed)
    // refresh token is answered invalid_grant and revokes the whole grant.
    rotateRefreshToken: true,
    // Default issueRefreshToken is kept: a refresh token is issued when the
    // client allows the refresh_token grant AND offline_access was granted.
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: AUTH_CODE_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: Math.max(REFRESH_TOKEN_TTL, 14 * 24 * 3600),
    },
  };
}

// ---------------------------------------------------------------------------
// Minimal interaction (login + consent in one form post)
//
//   GET  /interaction/:uid         login prompt: HTML form;
//                                  consent prompt (already logged in): auto-approves, 303
//   POST /interaction/:uid/login   form `login=<name>` (`password` ignored): logs in AND
//                                  grants every requested scope, 303 to /auth/:uid
//   GET  /interaction/:uid/abort   access_denied back to the client
// ---------------------------------------------------------------------------

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) { reject(new Error('body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'Content-Type': type,
    'Cache-Control': 'no-store',
    'Content-Length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

const sendJson = (res, status, obj, headers) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(obj), headers);

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function grantAllRequested(provider, details, accountId) {
  const { params } = details;
  // Reuse the existing grant only if it belongs to the same account.
  let grant;
  if (details.grantId) {
    const existing = await provider.Grant.find(details.grantId);
    if (existing && existing.accountId === accountId) grant = existing;
  }
  grant ||= new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = details.prompt?.details || {};
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return grant.save();
}

async function handleInteraction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, 'text/plain; charset=utf-8', `interaction error: ${err.message}: ${err.error_description || ''}\n`);
  }
  if (details.uid !== uid) {
    return send(res, 400, 'text/plain; charset=utf-8', 'interaction cookie does not match the URL\n');
  }

  if (req.method === 'GET' && action === '') {
    if (details.prompt.name === 'consent' && details.session?.accountId) {
      // Already logged in: approve whatever is missing, no page.
      const grantId = await grantAllRequested(provider, details, details.session.accountId);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    const hint = details.params.login_hint || '';
    const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>sluice test IdP: sign in</title></head>
<body>
<h1>Sign in to ${html(details.params.client_id)}</h1>
<p>Any login name is accepted; the password is ignored. Scopes: ${html(details.params.scope || '')}</p>
<form method="post" action="/interaction/${html(uid)}/login">
  <input type="text" name="login" value="${html(hint)}" placeholder="login" required autofocus>
  <input type="password" name="password" placeholder="password (ignored)">
  <button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${html(uid)}/abort">Cancel</a></p>
</body></html>`;
    return send(res, 200, 'text/html; charset=utf-8', page);
  }

  if (req.method === 'POST' && action === '/login') {
    const form = new URLSearchParams(await readBody(req));
    const accountId = (form.get('login') || '').trim();
    if (!accountId) return send(res, 400, 'text/plain; charset=utf-8', 'missing form field: login\n');
    const grantId = await grantAllRequested(provider, details, accountId);
    log(`login ${accountId} for ${details.params.client_id} scope="${details.params.scope}"`);
    return provider.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  if ((req.method === 'GET' || req.method === 'POST') && action === '/abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
}

// oidc-provider silently drops `offline_access` from an authorization request
// unless it also carries `prompt=consent` (and then no refresh token is
// issued). Many clients do not send prompt=consent, so by default a GET /auth
// that asks for offline_access without any `prompt` gets `prompt=consent`
// added here (consent is automatic in this IdP, so nothing else changes).
// IDP_STRICT_OFFLINE_ACCESS=1 turns this off (plain oidc-provider behaviour).
const STRICT_OFFLINE_ACCESS = process.env.IDP_STRICT_OFFLINE_ACCESS === '1';

function offlineAccessShim(req, url) {
  if (STRICT_OFFLINE_ACCESS) return;
  const scopes = (url.searchParams.get('scope') || '').split(' ');
  if (scopes.includes('offline_access') && !url.searchParams.has('prompt')) {
    url.searchParams.set('prompt', 'consent');
    req.url = url.pathname + url.search;
  }
}

// ===========================================================================
// TEST-ONLY FAULT INJECTION  (not part of any real authorization server)
//
//   POST /__test/fail?mode=down[&count=N]   token endpoint (POST /token) answers
//                                           503 {"error":"temporarily_unavailable"};
//                                           with count=N only the next N token
//                                           requests fail, then it is back to ok
//   POST /__test/fail?mode=ok               token endpoint works again
//   GET  /__test/state                      {"mode","remaining","token_requests","token_failures"}
//
// Only /token is affected; discovery, jwks, /auth, userinfo, revocation and
// introspection keep working.
// ===========================================================================

const fault = { mode: 'ok', remaining: null, tokenRequests: 0, tokenFailures: 0 };

function faultState() {
  return {
    mode: fault.mode,
    remaining: fault.remaining,
    token_requests: fault.tokenRequests,
    token_failures: fault.tokenFailures,
  };
}

async function handleTestAdmin(req, res, url) {
  await readBody(req).catch(() => '');
  if (url.pathname === '/__test/state' && req.method === 'GET') {
    return sendJson(res, 200, faultState());
  }
  if (url.pathname === '/__test/fail' && req.method === 'POST') {
    const mode = url.searchParams.get('mode');
    if (mode !== 'down' && mode !== 'ok') {
      return sendJson(res, 400, { error: 'mode must be down or ok' });
    }
    let remaining = null;
    if (mode === 'down' && url.searchParams.has('count')) {
      remaining = Number(url.searchParams.get('count'));
      if (!Number.isInteger(remaining) || remaining < 1) {
        return sendJson(res, 400, { error: 'count must be a positive integer' });
      }
    }
    fault.mode = mode;
    fault.remaining = remaining;
    log(`fault mode=${mode} remaining=${remaining}`);
    return sendJson(res, 200, faultState());
  }
  return sendJson(res, 404, { error: 'not found' });
}

// Returns true when the request was answered with the injected failure.
async function tokenFaultInjected(req, res, url) {
  if (url.pathname !== '/token') return false;
  fault.tokenRequests += 1;
  if (fault.mode !== 'down') return false;
  fault.tokenFailures += 1;
  if (fault.remaining !== null) {
    fault.remaining -= 1;
    if (fault.remaining <= 0) { fault.mode = 'ok'; fault.remaining = null; }
  }
  await readBody(req).catch(() => '');
  sendJson(res, 503, {
    error: 'temporarily_unavailable',
    error_description: 'token endpoint is down (test fault injection)',
  });
  return true;
}

// ===========================================================================
// END OF TEST-ONLY FAULT INJECTION
// ===========================================================================

// ---------------------------------------------------------------------------
// Server, readiness line, shutdown
// ---------------------------------------------------------------------------

function shutdown(reason, code = 0) {
  log(`shutting down (${reason})`);
  process.exit(code);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// Exit when stdin reaches EOF. IDP_EXIT_ON_STDIN_EOF: "auto" (default: only
// when stdin is a pipe or a socket, so `node server.mjs </dev/null &` keeps
// running), "1" (always), "0" (never).
function watchStdin() {
  const mode = process.env.IDP_EXIT_ON_STDIN_EOF || 'auto';
  if (mode === '0') return;
  if (mode === 'auto') {
    let st;
    try { st = fs.fstatSync(0); } catch { return; }
    if (!st.isFIFO() && !st.isSocket()) return;
  }
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

async function main() {
  const clients = loadClients();
  watchStdin();

  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(PORT, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, providerConfig(clients));
  provider.on('server_error', (_ctx, err) => console.error('idp server_error:', err));
  if (LOG) {
    for (const ev of ['grant.error', 'authorization.error', 'revocation.error', 'userinfo.error', 'introspection.error']) {
      provider.on(ev, (_ctx, err) => log(`${ev}: ${err.message} (${err.error_detail || err.error_description || ''})`));
    }
  }
  // Fail fast on invalid client metadata (otherwise only seen on first use).
  for (const c of clients) {
    await provider.Client.find(c.client_id);
  }
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    if (LOG) res.on('finish', () => log(`${req.method} ${url.pathname} -> ${res.statusCode}`));
    try {
      if (url.pathname.startsWith('/__test/')) return await handleTestAdmin(req, res, url);
      if (await tokenFaultInjected(req, res, url)) return undefined;
      if (url.pathname === '/auth' && req.method === 'GET') offlineAccessShim(req, url);
      const m = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/abort)?$/.exec(url.pathname);
      if (m) return await handleInteraction(provider, req, res, m[1], m[2] || '');
      return callback(req, res);
    } catch (err) {
      console.error('idp: request failed:', err);
      if (!res.headersSent) return send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      return res.destroy();
    }
  });

  process.stdout.write(`IDP_READY ${issuer}\n`);
}

main().catch((err) => {
  console.error('idp: failed to start:', err);
  process.exit(1);
});
