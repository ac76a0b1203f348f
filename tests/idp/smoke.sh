#!/usr/bin/env bash
# Smoke test of the test IdP (tests/idp/server.mjs), with curl and a cookie jar,
# exactly as a non-browser client would drive it. Exits non-zero on any failure.
#
#   bash tests/idp/smoke.sh          (runs `npm ci` first if node_modules is missing)
#
# Needs: bash, curl, node. Talks to 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -d "$HERE/node_modules/oidc-provider" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund >&2)
fi

WORK=$(mktemp -d)
PIDS=()
PASS=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.err; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
ok() { PASS=$((PASS + 1)); echo "ok $PASS - $*"; }

# js FILE 'expression over d (the parsed JSON)' -> prints the result
js() { node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const r=eval(process.argv[2]);console.log(typeof r==="string"?r:JSON.stringify(r))' -- "$1" "$2"; }
urlenc() { node -e 'console.log(encodeURIComponent(process.argv[1]))' -- "$1"; }
rand() { node -e 'console.log(require("crypto").randomBytes(32).toString("base64url"))'; }
s256() { node -e 'console.log(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' -- "$1"; }
qparam() { node -e 'console.log(new URL(process.argv[1]).searchParams.get(process.argv[2]) ?? "")' -- "$1" "$2"; }

# start_idp NAME [VAR=value ...]: starts the server with its stdin on a FIFO that
# this script holds open; sets ISS, and IDP_PID_<NAME> / IDP_FD_<NAME>.
start_idp() {
  local name=$1; shift
  local fifo="$WORK/$name.stdin"
  mkfifo "$fifo"
  env "$@" node "$HERE/server.mjs" <"$fifo" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  PIDS+=("$pid")
  local fd
  exec {fd}>"$fifo"
  printf -v "IDP_PID_$name" '%s' "$pid"
  printf -v "IDP_FD_$name" '%s' "$fd"
  for _ in $(seq 1 100); do
    if grep -q '^IDP_READY ' "$WORK/$name.out" 2>/dev/null; then
      ISS=$(sed -n 's/^IDP_READY //p' "$WORK/$name.out")
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "idp $name exited before IDP_READY"
    sleep 0.1
  done
  fail "idp $name did not print IDP_READY within 10 s"
}

wait_exit() { # wait_exit PID SECONDS
  for _ in $(seq 1 $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# login ISS JAR CLIENT_ID REDIRECT_URI USER SCOPE [EXTRA_QUERY]
# Drives the authorization-code + PKCE login and sets CODE and VERIFIER.
# Starts from an empty cookie jar (no IdP session), as a first login does.
login() {
  local iss=$1 jar=$2 client=$3 redirect=$4 user=$5 scope=$6 extra=${7:-}
  rm -f "$jar"
  VERIFIER=$(rand)
  local challenge state nonce out code loc
  challenge=$(s256 "$VERIFIER")
  state=$(rand); nonce=$(rand)
  LAST_NONCE=$nonce
  # 1. authorization request -> 303 to /interaction/<uid> (sets _interaction*, _interaction_resume*)
  out=$(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' \
    "$iss/auth?response_type=code&client_id=$(urlenc "$client")&redirect_uri=$(urlenc "$redirect")&scope=$(urlenc "$scope")&state=$state&nonce=$nonce&code_challenge=$challenge&code_challenge_method=S256$extra")
  code=${out%% *}; loc=${out#* }
  [ "$code" = 303 ] || fail "login $user: /auth answered $code"
  case $loc in "$iss/interaction/"*) ;; *) fail "login $user: /auth redirected to '$loc'";; esac
  # 2. (what a browser shows: the login form; not needed, but check it is there)
  curl -s -c "$jar" -b "$jar" "$loc" | grep -q 'name="login"' || fail "login $user: no login form at $loc"
  # 3. post the login form -> 303 to /auth/<uid>
  out=$(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' \
    --data-urlencode "login=$user" --data-urlencode 'password=anything' "$loc/login")
  code=${out%% *}; loc=${out#* }
  [ "$code" = 303 ] || fail "login $user: login POST answered $code"
  case $loc in "$iss/auth/"*) ;; *) fail "login $user: login POST redirected to '$loc'";; esac
  # 4. resume -> 303 to redirect_uri?code=...&state=...&iss=...
  out=$(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}' "$loc")
  code=${out%% *}; loc=${out#* }
  [ "$code" = 303 ] || fail "login $user: resume answered $code"
  case $loc in "$redirect?"*) ;; *) fail "login $user: resume redirected to '$loc'";; esac
  [ "$(qparam "$loc" state)" = "$state" ] || fail "login $user: state mismatch in $loc"
  [ "$(qparam "$loc" iss)" = "$iss" ] || fail "login $user: iss mismatch in $loc"
  CODE=$(qparam "$loc" code)
  [ -n "$CODE" ] || fail "login $user: no code in $loc"
}

# token ISS OUTFILE AUTH(basic:ID:SECRET|post:ID:SECRET) FORM... -> prints HTTP status
token() {
  local iss=$1 outf=$2 auth=$3; shift 3
  local method=${auth%%:*} rest=${auth#*:}
  local id=${rest%%:*} secret=${rest#*:}
  local args=()
  if [ "$method" = basic ]; then args=(-u "$id:$secret"); else args=(--data-urlencode "client_id=$id" --data-urlencode "client_secret=$secret"); fi
  local f; for f in "$@"; do args+=(--data-urlencode "$f"); done
  curl -s -o "$outf" -w '%{http_code}' "${args[@]}" "$iss/token"
}

userinfo_status() { curl -s -o "$WORK/ui.json" -w '%{http_code}' -H "Authorization: Bearer $2" "$1/me"; }

# ---------------------------------------------------------------------------
start_idp main
MAIN=$ISS
[ "$(wc -l <"$WORK/main.out")" -eq 1 ] || fail "stdout is not exactly one line"
ok "started, issuer $MAIN"

REDIRECT=http://127.0.0.1:8080/callback
BASIC=basic:sluice:sluice-test-secret

# --- discovery ---------------------------------------------------------------
curl -sf "$MAIN/.well-known/openid-configuration" -o "$WORK/disc.json" || fail "discovery"
[ "$(js "$WORK/disc.json" d.issuer)" = "$MAIN" ] || fail "discovery issuer"
[ "$(js "$WORK/disc.json" d.token_endpoint)" = "$MAIN/token" ] || fail "token_endpoint"
[ "$(js "$WORK/disc.json" d.revocation_endpoint)" = "$MAIN/token/revocation" ] || fail "revocation_endpoint"
[ "$(js "$WORK/disc.json" 'd.code_challenge_methods_supported.join()')" = S256 ] || fail "PKCE methods"
[ "$(js "$WORK/disc.json" 'd.id_token_signing_alg_values_supported.join()')" = RS256 ] || fail "id_token algs"
js "$WORK/disc.json" 'd.scopes_supported.join(" ")' | grep -q offline_access || fail "offline_access not in scopes_supported"
curl -sf "$MAIN/jwks" -o "$WORK/jwks.json" || fail "jwks"
[ "$(js "$WORK/jwks.json" 'd.keys[0].kty+" "+d.keys[0].alg')" = "RSA RS256" ] || fail "jwks key"
js "$WORK/jwks.json" 'd.keys[0].d===undefined' | grep -q true || fail "jwks leaks the private key"
ok "discovery and jwks"

# --- PKCE is required ----------------------------------------------------------
out=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' \
  "$MAIN/auth?response_type=code&client_id=sluice&redirect_uri=$(urlenc $REDIRECT)&scope=openid&state=x")
case $out in "303 $REDIRECT?"*error=invalid_request*) ;; *) fail "no-PKCE request not rejected: $out";; esac
ok "authorization request without code_challenge is rejected (invalid_request)"

# --- code + PKCE login for alice, token exchange -------------------------------
login "$MAIN" "$WORK/alice.jar" sluice "$REDIRECT" alice 'openid profile email offline_access'
ok "alice logged in non-interactively, got a code"
st=$(token "$MAIN" "$WORK/bad.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$(rand)")
[ "$st" = 400 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_grant ] || fail "wrong code_verifier: $st $(cat "$WORK/bad.json")"
ok "wrong code_verifier -> invalid_grant"
# (a failed PKCE check consumes the code, so log in again)
login "$MAIN" "$WORK/alice.jar" sluice "$REDIRECT" alice 'openid profile email offline_access'
st=$(token "$MAIN" "$WORK/t1.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER")
[ "$st" = 200 ] || fail "code exchange: $st $(cat "$WORK/t1.json")"
for k in access_token id_token refresh_token; do
  [ -n "$(js "$WORK/t1.json" "d.$k||''")" ] || fail "token response lacks $k: $(cat "$WORK/t1.json")"
done
[ "$(js "$WORK/t1.json" d.token_type)" = Bearer ] || fail "token_type"
[ "$(js "$WORK/t1.json" d.expires_in)" = 3600 ] || fail "expires_in"
[ "$(js "$WORK/t1.json" d.scope)" = 'openid profile email offline_access' ] || fail "scope: $(js "$WORK/t1.json" d.scope)"
ok "code exchange (client_secret_basic) -> access_token, id_token, refresh_token"

# --- id_token: RS256 signature against the JWKS, claims -------------------------
node - "$WORK/t1.json" "$WORK/jwks.json" "$MAIN" "$LAST_NONCE" <<'EOF' || fail "id_token check"
const fs = require('fs'), crypto = require('crypto');
const [tok, jwks, iss, nonce] = process.argv.slice(2);
const t = JSON.parse(fs.readFileSync(tok, 'utf8')).id_token;
const keys = JSON.parse(fs.readFileSync(jwks, 'utf8')).keys;
const [h, p, s] = t.split('.');
const header = JSON.parse(Buffer.from(h, 'base64url'));
const claims = JSON.parse(Buffer.from(p, 'base64url'));
const jwk = keys.find((k) => k.kid === header.kid);
const assert = (c, m) => { if (!c) { console.error('id_token:', m, header, claims); process.exit(1); } };
assert(header.alg === 'RS256' && jwk, 'alg/kid');
const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
assert(crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url')), 'signature');
assert(claims.iss === iss && claims.aud === 'sluice' && claims.sub === 'alice', 'iss/aud/sub');
assert(JSON.stringify(claims.groups) === '["analyst"]' && claims.tenant === 'acme', 'groups/tenant');
assert(claims.nonce === nonce, 'nonce');
assert(claims.email === 'alice@acme.test' && claims.name === 'Alice Analyst', 'profile/email');
assert(claims.exp - claims.iat === 3600, 'exp');
EOF
ok "id_token RS256 verifies against jwks; sub/groups/tenant/nonce/email claims"

AT1=$(js "$WORK/t1.json" d.access_token)
[ "$(userinfo_status "$MAIN" "$AT1")" = 200 ] || fail "userinfo"
[ "$(js "$WORK/ui.json" 'd.sub+" "+d.groups.join()+" "+d.tenant')" = "alice analyst acme" ] || fail "userinfo claims $(cat "$WORK/ui.json")"
ok "userinfo with the access token: groups and tenant"

# --- refresh with rotation ------------------------------------------------------
RT1=$(js "$WORK/t1.json" d.refresh_token)
st=$(token "$MAIN" "$WORK/t2.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT1")
[ "$st" = 200 ] || fail "refresh: $st $(cat "$WORK/t2.json")"
RT2=$(js "$WORK/t2.json" d.refresh_token)
AT2=$(js "$WORK/t2.json" d.access_token)
[ -n "$RT2" ] && [ "$RT2" != "$RT1" ] || fail "refresh token not rotated"
[ -n "$(js "$WORK/t2.json" "d.id_token||''")" ] || fail "refresh response lacks id_token"
[ "$(userinfo_status "$MAIN" "$AT2")" = 200 ] || fail "new access token does not work"
ok "refresh rotates the refresh token (new access_token, id_token, refresh_token)"
st=$(token "$MAIN" "$WORK/bad.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT1")
[ "$st" = 400 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_grant ] || fail "old refresh token still works: $st"
ok "old (rotated) refresh token -> invalid_grant"
st=$(token "$MAIN" "$WORK/bad.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT2")
[ "$st" = 400 ] || fail "reuse detection: newest refresh token still works after old one was replayed ($st)"
[ "$(userinfo_status "$MAIN" "$AT2")" = 401 ] || fail "reuse detection: access token still valid"
ok "replaying a rotated refresh token revokes the whole grant (newest refresh + access token dead)"

# --- SSO: a second authorization request with the session cookie needs no login --
loc="$MAIN/auth?response_type=code&client_id=sluice&redirect_uri=$(urlenc $REDIRECT)&scope=$(urlenc 'openid offline_access')&state=sso&code_challenge=$(s256 "$(rand)")&code_challenge_method=S256"
hops=0
while case $loc in "$MAIN"/*) true;; *) false;; esac; do   # follow redirects while they stay on the IdP
  hops=$((hops + 1)); [ $hops -le 5 ] || fail "SSO: too many redirects"
  out=$(curl -s -o /dev/null -c "$WORK/alice.jar" -b "$WORK/alice.jar" -w '%{http_code} %{redirect_url}' "$loc")
  [ "${out%% *}" = 303 ] || fail "SSO: $loc answered $out"
  loc=${out#* }
done
case $loc in "$REDIRECT?code="*) ;; *) fail "SSO re-authorization ended at $loc";; esac
ok "re-authorization with the _session cookie: redirects straight through to a code"

# --- revocation (RFC 7009) -------------------------------------------------------
login "$MAIN" "$WORK/alice2.jar" sluice "$REDIRECT" alice 'openid offline_access'
token "$MAIN" "$WORK/r1.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
token "$MAIN" "$WORK/r2.json" "$BASIC" grant_type=refresh_token "refresh_token=$(js "$WORK/r1.json" d.refresh_token)" >/dev/null
RT=$(js "$WORK/r2.json" d.refresh_token); AT=$(js "$WORK/r2.json" d.access_token)
[ -n "$RT" ] || fail "no refresh token before revocation"
st=$(curl -s -o "$WORK/rev.out" -w '%{http_code}' -u sluice:sluice-test-secret \
  --data-urlencode "token=$RT" --data-urlencode token_type_hint=refresh_token "$MAIN/token/revocation")
[ "$st" = 200 ] || fail "revocation answered $st $(cat "$WORK/rev.out")"
st=$(token "$MAIN" "$WORK/bad.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT")
[ "$st" = 400 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_grant ] || fail "revoked refresh token still works: $st"
[ "$(userinfo_status "$MAIN" "$AT")" = 401 ] || fail "access token of the revoked grant still valid"
st=$(curl -s -o /dev/null -w '%{http_code}' -u sluice:sluice-test-secret --data-urlencode "token=$RT" "$MAIN/token/revocation")
[ "$st" = 200 ] || fail "revoking an unknown token should answer 200, got $st"
ok "revocation of the refresh token at /token/revocation -> refresh invalid_grant (its access tokens die too)"

# --- authorization code replay ------------------------------------------------------
login "$MAIN" "$WORK/alice4.jar" sluice "$REDIRECT" alice 'openid offline_access'
token "$MAIN" "$WORK/p1.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
AT=$(js "$WORK/p1.json" d.access_token)
[ "$(userinfo_status "$MAIN" "$AT")" = 200 ] || fail "userinfo before code replay"
st=$(token "$MAIN" "$WORK/bad.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER")
[ "$st" = 400 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_grant ] || fail "code replay: $st"
[ "$(userinfo_status "$MAIN" "$AT")" = 401 ] || fail "tokens from a replayed code still valid"
ok "code replay -> invalid_grant, and the tokens issued from that code are revoked"

# --- other users, explicit prompt=consent, no offline_access -----------------------
login "$MAIN" "$WORK/carol.jar" sluice "$REDIRECT" carol 'openid offline_access' '&prompt=consent'
token "$MAIN" "$WORK/c.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
[ -n "$(js "$WORK/c.json" "d.refresh_token||''")" ] || fail "carol (prompt=consent): no refresh token"
userinfo_status "$MAIN" "$(js "$WORK/c.json" d.access_token)" >/dev/null
[ "$(js "$WORK/ui.json" 'd.sub+" "+d.groups.join()+" "+d.tenant')" = "carol compliance acme" ] || fail "carol claims $(cat "$WORK/ui.json")"
login "$MAIN" "$WORK/root.jar" sluice "$REDIRECT" root 'openid'
token "$MAIN" "$WORK/r.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
[ -z "$(js "$WORK/r.json" "d.refresh_token||''")" ] || fail "refresh token issued without offline_access"
[ "$(js "$WORK/r.json" 'JSON.parse(Buffer.from(d.id_token.split(".")[1],"base64url")).groups.join()')" = admin ] || fail "root groups"
login "$MAIN" "$WORK/bob.jar" sluice "$REDIRECT" bob 'openid'
token "$MAIN" "$WORK/b.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
[ "$(js "$WORK/b.json" 'const c=JSON.parse(Buffer.from(d.id_token.split(".")[1],"base64url"));c.sub+" ["+c.groups.join()+"] "+c.tenant')" = "bob [] acme" ] || fail "unknown user claims"
ok "carol (explicit prompt=consent) / root / unknown user: claims; no offline_access -> no refresh token"

# --- client authentication ------------------------------------------------------------
# oidc-provider treats client_secret_basic and client_secret_post as interchangeable:
# a client registered with either may use either.
login "$MAIN" "$WORK/alice5.jar" sluice "$REDIRECT" alice 'openid offline_access'
st=$(token "$MAIN" "$WORK/cp.json" post:sluice:sluice-test-secret grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER")
[ "$st" = 200 ] || fail "client_secret_post for the default client: $st $(cat "$WORK/cp.json")"
st=$(token "$MAIN" "$WORK/bad.json" basic:sluice:wrong grant_type=refresh_token refresh_token=x)
[ "$st" = 401 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_client ] || fail "wrong secret (basic) accepted ($st)"
st=$(token "$MAIN" "$WORK/bad.json" post:sluice:wrong grant_type=refresh_token refresh_token=x)
[ "$st" = 401 ] && [ "$(js "$WORK/bad.json" d.error)" = invalid_client ] || fail "wrong secret (post) accepted ($st)"
st=$(curl -s -o /dev/null -w '%{http_code}' -d grant_type=refresh_token -d refresh_token=x "$MAIN/token")
[ "$st" = 400 ] || [ "$st" = 401 ] || fail "no client auth accepted ($st)"
ok "client auth: client_secret_basic and client_secret_post both work; wrong/missing secret rejected"

# --- TEST-ONLY fault injection: POST /__test/fail ----------------------------------
login "$MAIN" "$WORK/alice3.jar" sluice "$REDIRECT" alice 'openid offline_access'
token "$MAIN" "$WORK/f1.json" "$BASIC" grant_type=authorization_code "code=$CODE" "redirect_uri=$REDIRECT" "code_verifier=$VERIFIER" >/dev/null
RT=$(js "$WORK/f1.json" d.refresh_token)
curl -sf -X POST "$MAIN/__test/fail?mode=down" -o "$WORK/state.json" || fail "__test/fail down"
st=$(token "$MAIN" "$WORK/f.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT")
[ "$st" = 503 ] && [ "$(js "$WORK/f.json" d.error)" = temporarily_unavailable ] || fail "token endpoint not 503 while down ($st)"
token "$MAIN" "$WORK/f.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT" >/dev/null
curl -sf "$MAIN/.well-known/openid-configuration" -o /dev/null || fail "discovery should stay up while token endpoint is down"
curl -sf -X POST "$MAIN/__test/fail?mode=ok" -o /dev/null || fail "__test/fail ok"
st=$(token "$MAIN" "$WORK/f2.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT")
[ "$st" = 200 ] || fail "refresh after mode=ok: $st $(cat "$WORK/f2.json")"
RT=$(js "$WORK/f2.json" d.refresh_token)
curl -sf -X POST "$MAIN/__test/fail?mode=down&count=2" -o /dev/null || fail "__test/fail count"
s1=$(token "$MAIN" /dev/null "$BASIC" grant_type=refresh_token "refresh_token=$RT")
s2=$(token "$MAIN" /dev/null "$BASIC" grant_type=refresh_token "refresh_token=$RT")
s3=$(token "$MAIN" "$WORK/f3.json" "$BASIC" grant_type=refresh_token "refresh_token=$RT")
[ "$s1 $s2 $s3" = "503 503 200" ] || fail "count=2: got $s1 $s2 $s3"
curl -sf "$MAIN/__test/state" -o "$WORK/state.json" || fail "__test/state"
[ "$(js "$WORK/state.json" 'd.mode+" "+d.token_failures')" = "ok 4" ] || fail "state: $(cat "$WORK/state.json")"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$MAIN/__test/fail?mode=bogus")
[ "$st" = 400 ] || fail "bad mode accepted"
ok "__test/fail: mode=down -> 503 temporarily_unavailable (refresh token not consumed), mode=ok, count=N, /__test/state"

# --- second server: short access token TTL, fixed port, client_secret_post ----------
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
CLIENTS='[{"client_id":"cli","client_secret":"cli-secret","redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"client_secret_post"}]'
start_idp ttl IDP_PORT="$PORT" IDP_ACCESS_TOKEN_TTL=2 IDP_CLIENTS="$CLIENTS" IDP_STRICT_OFFLINE_ACCESS=1
TTL=$ISS
[ "$TTL" = "http://127.0.0.1:$PORT" ] || fail "IDP_PORT not honoured: $TTL"
# IDP_STRICT_OFFLINE_ACCESS=1: offline_access without prompt=consent is dropped (no refresh token)
login "$TTL" "$WORK/ttl.jar" cli http://127.0.0.1:1/cb alice 'openid offline_access'
token "$TTL" "$WORK/s0.json" post:cli:cli-secret grant_type=authorization_code "code=$CODE" "redirect_uri=http://127.0.0.1:1/cb" "code_verifier=$VERIFIER" >/dev/null
[ "$(js "$WORK/s0.json" 'd.scope+" "+(d.refresh_token?"rt":"no-rt")')" = "openid no-rt" ] || fail "strict offline_access: $(cat "$WORK/s0.json")"
login "$TTL" "$WORK/ttl.jar" cli http://127.0.0.1:1/cb alice 'openid offline_access' '&prompt=consent'
st=$(token "$TTL" "$WORK/s1.json" post:cli:cli-secret grant_type=authorization_code "code=$CODE" "redirect_uri=http://127.0.0.1:1/cb" "code_verifier=$VERIFIER")
[ "$st" = 200 ] || fail "client_secret_post exchange: $st $(cat "$WORK/s1.json")"
[ "$(js "$WORK/s1.json" d.expires_in)" = 2 ] || fail "expires_in $(js "$WORK/s1.json" d.expires_in)"
AT=$(js "$WORK/s1.json" d.access_token)
[ "$(userinfo_status "$TTL" "$AT")" = 200 ] || fail "fresh short-lived access token rejected"
sleep 3
[ "$(userinfo_status "$TTL" "$AT")" = 401 ] || fail "access token still valid after its TTL"
curl -s -o "$WORK/intro.json" --data-urlencode client_id=cli --data-urlencode client_secret=cli-secret \
  --data-urlencode "token=$AT" "$TTL/token/introspection"
[ "$(js "$WORK/intro.json" d.active)" = false ] || fail "introspection of expired token: $(cat "$WORK/intro.json")"
st=$(token "$TTL" "$WORK/s2.json" post:cli:cli-secret grant_type=refresh_token "refresh_token=$(js "$WORK/s1.json" d.refresh_token)")
[ "$st" = 200 ] || fail "refresh after access token expiry: $st"
[ "$(userinfo_status "$TTL" "$(js "$WORK/s2.json" d.access_token)")" = 200 ] || fail "refreshed access token rejected"
ok "IDP_ACCESS_TOKEN_TTL=2 honoured (expires_in=2, 401 after 3 s, refresh works); IDP_PORT; IDP_CLIENTS; IDP_STRICT_OFFLINE_ACCESS"

# --- shutdown: stdin EOF and SIGTERM ------------------------------------------------
exec {IDP_FD_ttl}>&-
wait_exit "$IDP_PID_ttl" 5 || fail "server did not exit when its stdin closed"
ok "exits when stdin is closed"
kill -TERM "$IDP_PID_main"
wait_exit "$IDP_PID_main" 5 || fail "server did not exit on SIGTERM"
ok "exits on SIGTERM"

echo "$PASS passed, 0 failed"
