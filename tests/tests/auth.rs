//! Authentication end to end, over real HTTP: the web-ticket flow (service token → ticket →
//! session), customer-signed JWTs (HS256, RS256 from a PEM key, ES256 and EdDSA from a JWKS
//! served over HTTP), API keys, roles, embedding origins, failure rate limits, and SSO against a
//! real OIDC provider (npm `oidc-provider`, `tests/idp`). Every attack is refused with its own
//! code and leaves an audit record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sluice::auth::{AuthMethod, Principal};
use sluice::config::{Config, JwtAlgorithm};
use sluice::http::server::RunningServer;
use sluice_audit::{AuditRecord, Event, open_read_only, read_settled};

const ALLOWED_ORIGIN: &str = "https://host.example";

struct Daemon {
    server: RunningServer,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn start_with(edit: impl FnOnce(&mut Config)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.auth.roles.admin = vec!["ops".into()];
    config.auth.roles.compliance = vec!["auditors".into()];
    config.server.allowed_origins = vec![ALLOWED_ORIGIN.into()];
    edit(&mut config);
    let app = sluice::app::build(config).await.unwrap();
    let server = RunningServer::start(app, "127.0.0.1:0").await.unwrap();
    Daemon {
        server,
        data_dir,
        _dir: dir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid demo claims for a user of a tenant.
fn claims(user: &str, tenant: &str, groups: &[&str]) -> Value {
    json!({
        "sub": user, "tenant": tenant, "groups": groups,
        "iss": sluice::demo::ISSUER, "aud": sluice::demo::AUDIENCE,
        "iat": now(), "exp": now() + 600,
    })
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn hs256(&self, claims: &Value) -> String {
        let secret = sluice::demo::secret(&self.data_dir).unwrap();
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap()
    }

    fn store(&self) -> sluice::auth::store::AuthStore {
        sluice::app::open_auth_store(&self.data_dir).unwrap()
    }

    fn query(&self, sql: &str) -> RequestBuilder {
        self.http
            .post(self.url("/v1/query"))
            .json(&json!({ "sql": sql }))
    }

    async fn stop_and_read_audit(self) -> Vec<AuditRecord> {
        self.server.stop().await.unwrap();
        let conn = open_read_only(&self.data_dir.join(sluice::app::AUDIT_FILE)).unwrap();
        read_settled(&conn, std::time::Duration::from_secs(5)).unwrap()
    }
}

/// A response header as text ("" when absent).
fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

/// Sends a request; returns the status and the JSON body (`null` when there is none).
async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Expects a problem+json refusal with `status` and `code`.
async fn refused(req: RequestBuilder, status: StatusCode, code: &str) {
    let (s, body) = send(req).await;
    assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{body}");
}

fn tenants_of(body: &Value) -> Vec<String> {
    let mut t: Vec<String> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    t.dedup();
    t
}

/// Every code must appear in some record of the given events.
fn assert_audited(records: &[AuditRecord], events: &[Event], codes: &[&str]) {
    for code in codes {
        assert!(
            records
                .iter()
                .any(|r| events.contains(&r.event) && r.code.as_deref() == Some(code)),
            "no {events:?} audit record with code {code}"
        );
    }
}

async fn service_token(d: &Daemon, id: &str, secret: &str) -> String {
    let (s, body) = send(
        d.http
            .post(d.url("/v1/auth/token"))
            .json(&json!({"client_id": id, "client_secret": secret})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_string()
}

async fn ticket(d: &Daemon, service: &str, body: Value) -> String {
    let (s, b) = send(
        d.http
            .post(d.url("/v1/tickets"))
            .bearer_auth(service)
            .json(&body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["ticket"].as_str().unwrap().to_string()
}

/// Exchanges a ticket; returns the session token and the Set-Cookie header.
async fn session(d: &Daemon, ticket: &str) -> (String, String) {
    let resp = d
        .http
        .post(d.url("/v1/sessions"))
        .json(&json!({ "ticket": ticket }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    (body["session_token"].as_str().unwrap().to_string(), cookie)
}

#[tokio::test]
async fn web_ticket_flow_end_to_end_and_its_attacks() {
    let d = start_with(|_| {}).await;
    let secret = d
        .store()
        .create_client("acme-backend", &["acme".into()], None, None, now())
        .unwrap();

    // 1. Service token: JSON or HTTP Basic; a wrong secret is refused.
    let sst = service_token(&d, "acme-backend", &secret).await;
    assert!(sst.starts_with("sst_"));
    let (s, _) = send(
        d.http
            .post(d.url("/v1/auth/token"))
            .basic_auth("acme-backend", Some(&secret)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    refused(
        d.http
            .post(d.url("/v1/auth/token"))
            .json(&json!({"client_id": "acme-backend", "client_secret": "scs_guess"})),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;

    // 2. Tickets: within the client's scope only; never privileged groups.
    let t = ticket(
        &d,
        &sst,
        json!({"user": "alice", "tenant": "acme", "groups": ["analyst"], "attributes": {"region": "eu"}}),
    )
    .await;
    assert!(t.starts_with("slt_"));
    let mint = |body: Value| {
        d.http
            .post(d.url("/v1/tickets"))
            .bearer_auth(&sst)
            .json(&body)
    };
    refused(
        mint(json!({"user": "alice", "tenant": "globex"})),
        StatusCode::FORBIDDEN,
        "tenant_not_allowed",
    )
    .await;
    refused(
        mint(json!({"user": "alice", "tenant": "acme", "groups": ["ops"]})),
        StatusCode::FORBIDDEN,
        "group_not_allowed",
    )
    .await;
    refused(
        mint(json!({"user": "alice", "tenant": ["acme"]})),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let jwt = d.hs256(&claims("mallory", "acme", &["analyst"]));
    refused(
        d.http
            .post(d.url("/v1/tickets"))
            .bearer_auth(&jwt)
            .json(&json!({"user": "x", "tenant": "acme"})),
        StatusCode::UNAUTHORIZED,
        "wrong_credential",
    )
    .await;
    refused(
        d.http
            .post(d.url("/v1/tickets"))
            .bearer_auth("sst_forged")
            .json(&json!({"user": "x", "tenant": "acme"})),
        StatusCode::UNAUTHORIZED,
        "invalid_service_token",
    )
    .await;
    // A service token is not a data credential.
    refused(
        d.query("SELECT 1").bearer_auth(&sst),
        StatusCode::UNAUTHORIZED,
        "wrong_credential",
    )
    .await;
    // Nor is an unexchanged ticket.
    refused(
        d.query("SELECT 1").bearer_auth(&t),
        StatusCode::UNAUTHORIZED,
        "wrong_credential",
    )
    .await;

    // 3. Exchange once: a cookie and a bearer token.
    let (token, cookie) = session(&d, &t).await;
    assert!(token.starts_with("sls_"));
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    refused(
        d.http
            .post(d.url("/v1/sessions"))
            .json(&json!({ "ticket": t })),
        StatusCode::UNAUTHORIZED,
        "ticket_replayed",
    )
    .await;
    refused(
        d.http
            .post(d.url("/v1/sessions"))
            .json(&json!({ "ticket": "slt_made_up" })),
        StatusCode::UNAUTHORIZED,
        "invalid_ticket",
    )
    .await;

    let (s, me) = send(d.http.get(d.url("/v1/me")).bearer_auth(&token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"], "alice");
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["method"], "ticket_session");
    assert_eq!(me["attributes"], json!({"region": "eu"}));
    assert_eq!(me["roles"], json!(["analyst"]));

    // The session queries as its tenant only.
    let sql = "SELECT DISTINCT tenant_id FROM orders";
    let (s, body) = send(d.query(sql).bearer_auth(&token)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(tenants_of(&body), ["acme"]);

    // The cookie works from an allowed page; a cookie-borne POST without Origin is refused.
    let cookie_pair = cookie.split(';').next().unwrap().to_string();
    refused(
        d.query(sql).header("cookie", &cookie_pair),
        StatusCode::FORBIDDEN,
        "origin_required",
    )
    .await;
    let resp = d
        .query(sql)
        .header("cookie", &cookie_pair)
        .header("origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );
    refused(
        d.query(sql)
            .header("cookie", &cookie_pair)
            .header("origin", "https://evil.example"),
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
    )
    .await;

    // A ticket used after its lifetime.
    let short = ticket(
        &d,
        &sst,
        json!({"user": "alice", "tenant": "acme", "ttl_secs": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused(
        d.http
            .post(d.url("/v1/sessions"))
            .json(&json!({ "ticket": short })),
        StatusCode::UNAUTHORIZED,
        "ticket_expired",
    )
    .await;

    // 4. Sign out: the session is dead, and the cookie is cleared.
    let resp = d
        .http
        .delete(d.url("/v1/sessions/current"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(header(&resp, "set-cookie").contains("Max-Age=0"));
    refused(
        d.query(sql).bearer_auth(&token),
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;

    // Switching tenant means a new ticket, from a client scoped to both.
    let multi = d
        .store()
        .create_client(
            "portal",
            &["acme".into(), "globex".into()],
            None,
            None,
            now(),
        )
        .unwrap();
    let sst2 = service_token(&d, "portal", &multi).await;
    let t2 = ticket(&d, &sst2, json!({"user": "alice", "tenant": "globex"})).await;
    let (globex, _) = session(&d, &t2).await;
    let (_, body) = send(d.query(sql).bearer_auth(&globex)).await;
    assert_eq!(tenants_of(&body), ["globex"]);

    // An admin revokes every session of a user; nobody else may.
    let t3 = ticket(&d, &sst2, json!({"user": "bob", "tenant": "acme"})).await;
    let (bob, _) = session(&d, &t3).await;
    let analyst = d.hs256(&claims("eve", "acme", &["analyst"]));
    refused(
        d.http
            .delete(d.url("/v1/admin/users/bob/sessions"))
            .bearer_auth(&analyst),
        StatusCode::FORBIDDEN,
        "forbidden_role",
    )
    .await;
    let admin = d.hs256(&claims("root", "acme", &["ops"]));
    let (s, body) = send(
        d.http
            .delete(d.url("/v1/admin/users/bob/sessions"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(
        (s, body["revoked"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    refused(
        d.query(sql).bearer_auth(&bob),
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;

    let records = d.stop_and_read_audit().await;
    assert_audited(
        &records,
        &[Event::AuthEvent],
        &[
            "service_token_issued",
            "ticket_issued",
            "session_created",
            "session_revoked",
            "sessions_revoked",
        ],
    );
    assert_audited(
        &records,
        &[Event::AuthDenied],
        &[
            "invalid_client",
            "tenant_not_allowed",
            "group_not_allowed",
            "wrong_credential",
            "invalid_service_token",
            "ticket_replayed",
            "invalid_ticket",
            "ticket_expired",
            "forbidden_role",
        ],
    );
    assert_audited(
        &records,
        &[Event::QueryDenied],
        &["wrong_credential", "origin_required", "session_revoked"],
    );
    // Failed attempts say who tried and from where.
    let bad = records
        .iter()
        .find(|r| r.code.as_deref() == Some("invalid_client"))
        .unwrap();
    assert_eq!(bad.user.as_deref(), Some("acme-backend"));
    assert_eq!(bad.client_addr.as_deref(), Some("127.0.0.1"));
    // Session queries are attributed to the session.
    assert!(records.iter().any(|r| r.event == Event::QueryAttempt
        && r.auth_method.as_deref() == Some("ticket_session")
        && r.session_id.is_some()));
}

#[tokio::test]
async fn sessions_renew_while_used_and_expire_when_idle_or_past_their_cap() {
    // Lifetimes are whole seconds and CI machines are busy: every wait keeps a margin of a
    // second or more on both sides.
    let d = start_with(|c| {
        c.auth.sessions.idle_ttl_secs = 4;
        c.auth.sessions.max_ttl_secs = 10;
    })
    .await;
    let secret = d
        .store()
        .create_client("b", &["*".into()], None, None, now())
        .unwrap();
    let sst = service_token(&d, "b", &secret).await;
    let me = |t: &str| d.http.get(d.url("/v1/me")).bearer_auth(t.to_string());

    // Used every 1.5 s, it outlives its 4 s idle lifetime...
    let (token, _) = session(
        &d,
        &ticket(&d, &sst, json!({"user": "u", "tenant": "acme"})).await,
    )
    .await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (s, body) = send(me(&token)).await;
        if started.elapsed() < Duration::from_secs(8) {
            assert_eq!(s, StatusCode::OK, "{body} after {:?}", started.elapsed());
        }
    }
    // ...but not its 10 s cap, however often it is used.
    let mut last = (StatusCode::OK, Value::Null);
    while started.elapsed() < Duration::from_millis(12_500) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (s, body) = send(me(&token)).await;
        last = (s, body["code"].clone());
    }
    assert_eq!(
        (last.0, last.1.as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_expired"))
    );

    // Left alone, it expires after its idle lifetime.
    let (idle, _) = session(
        &d,
        &ticket(&d, &sst, json!({"user": "u", "tenant": "acme"})).await,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    refused(me(&idle), StatusCode::UNAUTHORIZED, "session_expired").await;
}

#[tokio::test]
async fn customer_jwt_attacks_are_refused_each_with_its_code_and_audited() {
    let d = start_with(|_| {}).await;
    let good = claims("alice", "acme", &["analyst"]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        d.hs256(&c)
    };
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(good.clone())
    );
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&[7u8; 32]),
    )
    .unwrap();
    let mut no_tenant = good.clone();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", with("exp", json!(now() - 3600)), "token_expired"),
        (
            "not yet valid",
            with("nbf", json!(now() + 3600)),
            "token_not_yet_valid",
        ),
        (
            "wrong audience",
            with("aud", json!("someone-else")),
            "invalid_audience",
        ),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            "invalid_issuer",
        ),
        ("bad signature", forged, "invalid_signature"),
        ("alg none", alg_none, "algorithm_not_allowed"),
        (
            "tenant is a number",
            with("tenant", json!(42)),
            "invalid_claims",
        ),
        (
            "tenant is an array",
            with("tenant", json!(["acme", "globex"])),
            "invalid_claims",
        ),
        (
            "tenant is an object",
            with("tenant", json!({"id": "acme"})),
            "invalid_claims",
        ),
        (
            "tenant is empty",
            with("tenant", json!("")),
            "invalid_claims",
        ),
        ("no tenant", d.hs256(&no_tenant), "invalid_claims"),
        (
            "groups not strings",
            with("groups", json!([1])),
            "invalid_claims",
        ),
        ("not a JWT", "abc.def".into(), "invalid_token"),
    ];
    for (name, token, code) in &cases {
        let (s, body) = send(d.query("SELECT 1").bearer_auth(token)).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(*code)),
            "{name}: {body}"
        );
    }
    let (s, _) = send(d.query("SELECT 1").bearer_auth(d.hs256(&good))).await;
    assert_eq!(s, StatusCode::OK);
    let records = d.stop_and_read_audit().await;
    let codes: Vec<&str> = cases.iter().map(|c| c.2).collect();
    assert_audited(&records, &[Event::QueryDenied], &codes);
    assert!(
        records
            .iter()
            .filter(|r| r.event == Event::QueryDenied)
            .all(|r| r.auth_method.as_deref() == Some("jwt"))
    );
}

fn fixture(name: &str) -> PathBuf {
    sluice_tests::repo_root()
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn asymmetric(c: &mut Config, alg: JwtAlgorithm) -> &mut sluice::config::JwtConfig {
    let jwt = c.auth.jwt.as_mut().unwrap();
    jwt.algorithm = alg;
    jwt.secret_file = None;
    jwt.secret_env = None;
    jwt
}

#[tokio::test]
async fn rs256_with_a_pem_key_and_the_public_key_as_hs256_secret_attack() {
    let d = start_with(|c| {
        asymmetric(c, JwtAlgorithm::RS256).public_key_file = Some(fixture("rsa-test-public.pem"));
    })
    .await;
    let private = std::fs::read(fixture("rsa-test-private.pem")).unwrap();
    let public = std::fs::read(fixture("rsa-test-public.pem")).unwrap();
    let good = claims("alice", "acme", &["analyst"]);
    let rs = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &good,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let (s, body) = send(
        d.query("SELECT DISTINCT tenant_id FROM orders")
            .bearer_auth(&rs),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(tenants_of(&body), ["acme"]);
    // The classic confusion: the public key (which anyone has) used as an HMAC secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    refused(
        d.query("SELECT 1").bearer_auth(&confused),
        StatusCode::UNAUTHORIZED,
        "algorithm_not_allowed",
    )
    .await;
    let records = d.stop_and_read_audit().await;
    assert_audited(&records, &[Event::QueryDenied], &["algorithm_not_allowed"]);
}

/// A JWKS document served over real HTTP, counting its fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Value) -> JwksServer {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (Arc::clone(&keys), Arc::clone(&fetches));
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (k, f) = (Arc::clone(&k), Arc::clone(&f));
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(k.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer { url, keys, fetches }
}

/// A fresh ES256 key: its signing key and its public JWK.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    (
        EncodingKey::from_ec_der(pkcs8.as_ref()),
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
               "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
    )
}

/// A fresh Ed25519 key: its signing key and its public JWK.
fn ed25519_key(kid: &str) -> (EncodingKey, Value) {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    (
        EncodingKey::from_ed_der(pkcs8.as_ref()),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "x": x}),
    )
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test]
async fn es256_from_a_jwks_with_key_rotation_unknown_kids_and_no_stampede() {
    let (k1, jwk1) = es256_key("k1");
    let (k2, jwk2) = es256_key("k2");
    let jwks = jwks_server(json!({ "keys": [jwk1.clone()] })).await;
    let url = jwks.url.clone();
    let d = start_with(move |c| {
        let jwt = asymmetric(c, JwtAlgorithm::ES256);
        jwt.jwks_url = Some(url);
        jwt.jwks_min_refetch_secs = 1;
    })
    .await;
    let good = claims("alice", "acme", &["analyst"]);
    let sql = "SELECT DISTINCT tenant_id FROM orders";
    let (s, body) = send(
        d.query(sql)
            .bearer_auth(sign(Algorithm::ES256, "k1", &k1, &good)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    // Warm cache: no fetch.
    let (s, _) = send(
        d.query(sql)
            .bearer_auth(sign(Algorithm::ES256, "k1", &k1, &good)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates to k2: an unknown kid triggers one refetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    *jwks.keys.lock().unwrap() = json!({ "keys": [jwk1, jwk2] });
    let (s, body) = send(
        d.query(sql)
            .bearer_auth(sign(Algorithm::ES256, "k2", &k2, &good)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

    // A flood of unknown kids: each refused, and the issuer is not stampeded (at most one
    // fetch per second, one at a time).
    let before = jwks.fetches.load(Ordering::SeqCst);
    let flood = (0..30).map(|i| {
        let token = sign(Algorithm::ES256, &format!("nope-{i}"), &k1, &good);
        let req = d.query("SELECT 1").bearer_auth(token);
        async move { send(req).await }
    });
    for (s, body) in futures::future::join_all(flood).await {
        assert_eq!(
            (s, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unknown_kid")),
            "{body}"
        );
    }
    let after = jwks.fetches.load(Ordering::SeqCst);
    assert!(
        after - before <= 1,
        "{} fetches for 30 unknown kids",
        after - before
    );

    // A token signed by a key the issuer never published, under a known kid.
    let (rogue, _) = es256_key("k1");
    refused(
        d.query("SELECT 1")
            .bearer_auth(sign(Algorithm::ES256, "k1", &rogue, &good)),
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    )
    .await;
    let records = d.stop_and_read_audit().await;
    assert_audited(
        &records,
        &[Event::QueryDenied],
        &["unknown_kid", "invalid_signature"],
    );
}

#[tokio::test]
async fn eddsa_from_a_jwks_and_another_algorithm_is_refused() {
    let (key, jwk) = ed25519_key("ed1");
    let jwks = jwks_server(json!({ "keys": [jwk] })).await;
    let url = jwks.url.clone();
    let d = start_with(move |c| asymmetric(c, JwtAlgorithm::EdDSA).jwks_url = Some(url)).await;
    let good = claims("alice", "globex", &["analyst"]);
    let (s, body) = send(
        d.query("SELECT DISTINCT tenant_id FROM orders")
            .bearer_auth(sign(Algorithm::EdDSA, "ed1", &key, &good)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(tenants_of(&body), ["globex"]);
    let (es, _) = es256_key("ed1");
    refused(
        d.query("SELECT 1")
            .bearer_auth(sign(Algorithm::ES256, "ed1", &es, &good)),
        StatusCode::UNAUTHORIZED,
        "algorithm_not_allowed",
    )
    .await;
    // Refused before the key set is consulted: no extra fetch.
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn jti_replay_protection_and_maximum_age() {
    let d = start_with(|c| {
        let jwt = c.auth.jwt.as_mut().unwrap();
        jwt.require_jti = true;
        jwt.max_age_secs = Some(300);
    })
    .await;
    let mut c = claims("alice", "acme", &["analyst"]);
    c["jti"] = json!("once-1");
    let token = d.hs256(&c);
    let (s, _) = send(d.query("SELECT 1").bearer_auth(&token)).await;
    assert_eq!(s, StatusCode::OK);
    refused(
        d.query("SELECT 1").bearer_auth(&token),
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    )
    .await;
    let no_jti = d.hs256(&claims("alice", "acme", &[]));
    refused(
        d.query("SELECT 1").bearer_auth(&no_jti),
        StatusCode::UNAUTHORIZED,
        "invalid_claims",
    )
    .await;
    let mut old = claims("alice", "acme", &[]);
    old["jti"] = json!("once-2");
    old["iat"] = json!(now() - 3600);
    refused(
        d.query("SELECT 1").bearer_auth(d.hs256(&old)),
        StatusCode::UNAUTHORIZED,
        "token_too_old",
    )
    .await;
}

fn principal(user: &str, tenant: &str, groups: &[&str]) -> Principal {
    Principal {
        user: user.into(),
        tenant: tenant.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: Default::default(),
        method: AuthMethod::ApiKey,
        session_id: None,
    }
}

#[tokio::test]
async fn api_keys_are_scoped_revocable_expire_and_can_be_disabled() {
    let d = start_with(|_| {}).await;
    let store = d.store();
    let (id, key) = store
        .create_api_key(
            "ci",
            &principal("bot", "initech", &["analyst"]),
            now(),
            None,
        )
        .unwrap();
    assert!(key.starts_with(&format!("slk_{id}_")));
    let (s, me) = send(d.http.get(d.url("/v1/me")).bearer_auth(&key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (me["user"].as_str(), me["method"].as_str()),
        (Some("bot"), Some("api_key"))
    );
    let (s, body) = send(
        d.query("SELECT DISTINCT tenant_id FROM orders")
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tenants_of(&body), ["initech"]);
    // Listing never shows the secret.
    let listed = serde_json::to_string(&store.list_api_keys().unwrap()).unwrap();
    assert!(listed.contains(&id) && !listed.contains(&key));

    assert!(store.revoke_api_key(&id, now()).unwrap());
    refused(
        d.query("SELECT 1").bearer_auth(&key),
        StatusCode::UNAUTHORIZED,
        "api_key_revoked",
    )
    .await;
    let (_, expired) = store
        .create_api_key(
            "old",
            &principal("bot", "acme", &[]),
            now() - 100,
            Some(now() - 1),
        )
        .unwrap();
    refused(
        d.query("SELECT 1").bearer_auth(&expired),
        StatusCode::UNAUTHORIZED,
        "api_key_expired",
    )
    .await;
    refused(
        d.query("SELECT 1").bearer_auth(format!("slk_{id}_guessed")),
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    d.server.stop().await.unwrap();

    let off = start_with(|c| c.auth.api_keys.enabled = false).await;
    let (_, key) = off
        .store()
        .create_api_key("x", &principal("bot", "acme", &[]), now(), None)
        .unwrap();
    refused(
        off.query("SELECT 1").bearer_auth(&key),
        StatusCode::UNAUTHORIZED,
        "api_keys_disabled",
    )
    .await;
}

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_address_and_per_principal() {
    let d = start_with(|c| {
        c.auth.rate_limit.max_failures_per_addr = 3;
        c.auth.rate_limit.max_failures_per_principal = 100;
    })
    .await;
    let bad = d.hs256(&json!({"sub": "x"}));
    for _ in 0..3 {
        refused(
            d.query("SELECT 1").bearer_auth(&bad),
            StatusCode::UNAUTHORIZED,
            "invalid_claims",
        )
        .await;
    }
    // Past the limit, even a valid credential from this address waits.
    let good = d.hs256(&claims("alice", "acme", &[]));
    let resp = d.query("SELECT 1").bearer_auth(&good).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "too_many_failures");
    let records = d.stop_and_read_audit().await;
    assert_audited(&records, &[Event::QueryDenied], &["too_many_failures"]);

    // Guessing one client's secret is capped per client and address.
    let d = start_with(|c| {
        c.auth.rate_limit.max_failures_per_addr = 100;
        c.auth.rate_limit.max_failures_per_principal = 2;
    })
    .await;
    let secret = d
        .store()
        .create_client("victim", &["acme".into()], None, None, now())
        .unwrap();
    let token = |s: &str| {
        d.http
            .post(d.url("/v1/auth/token"))
            .json(&json!({"client_id": "victim", "client_secret": s}))
    };
    refused(
        token("scs_guess"),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // Past the limit the guesser is told to wait…
    for _ in 0..2 {
        refused(
            token("scs_guess"),
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
        )
        .await;
    }
    // …but the right secret is never refused because someone guessed wrong: naming a client id
    // does not lock its backend out.
    service_token(&d, "victim", &secret).await;
    // Other clients are not affected.
    let other = d
        .store()
        .create_client("other", &["acme".into()], None, None, now())
        .unwrap();
    service_token(&d, "other", &other).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_failures_count_per_forwarded_client() {
    let d = start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.rate_limit.max_failures_per_addr = 3;
    })
    .await;
    let bad = d.hs256(&json!({"sub": "x"}));
    let good = d.hs256(&claims("alice", "acme", &[]));
    let from = |xff: &str, token: &str| {
        d.query("SELECT 1")
            .bearer_auth(token)
            .header("x-forwarded-for", xff)
    };
    for _ in 0..3 {
        refused(
            from("203.0.113.5", &bad),
            StatusCode::UNAUTHORIZED,
            "invalid_claims",
        )
        .await;
    }
    // That client waits, whatever it writes to the left of what the proxy appended…
    refused(
        from("203.0.113.5", &good),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
    )
    .await;
    refused(
        from("198.51.100.7, 203.0.113.5", &good),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
    )
    .await;
    // …and everyone else behind the same proxy is not locked out with it.
    let (s, _) = send(from("198.51.100.7", &good)).await;
    assert_eq!(s, StatusCode::OK);
    let records = d.stop_and_read_audit().await;
    assert!(
        records
            .iter()
            .any(|r| r.client_addr.as_deref() == Some("203.0.113.5")
                && r.code.as_deref() == Some("too_many_failures"))
    );
    assert!(records.iter().any(
        |r| r.client_addr.as_deref() == Some("198.51.100.7") && r.event == Event::QueryAttempt
    ));

    // Without trusted proxies the header is ignored: the address is the peer's.
    let d = start_with(|c| c.auth.rate_limit.max_failures_per_addr = 2).await;
    let (bad, good) = (
        d.hs256(&json!({"sub": "x"})),
        d.hs256(&claims("alice", "acme", &[])),
    );
    for xff in ["203.0.113.1", "203.0.113.2"] {
        refused(
            d.query("SELECT 1")
                .bearer_auth(&bad)
                .header("x-forwarded-for", xff),
            StatusCode::UNAUTHORIZED,
            "invalid_claims",
        )
        .await;
    }
    refused(
        d.query("SELECT 1")
            .bearer_auth(&good)
            .header("x-forwarded-for", "203.0.113.3"),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
    )
    .await;
}

#[tokio::test]
async fn rotated_service_secrets_overlap_then_stop() {
    let d = start_with(|_| {}).await;
    let store = d.store();
    let old = store
        .create_client("c", &["acme".into()], None, None, now())
        .unwrap();
    let new = store.rotate_client_secret("c", 0, now()).unwrap();
    service_token(&d, "c", &new).await;
    refused(
        d.http
            .post(d.url("/v1/auth/token"))
            .json(&json!({"client_id": "c", "client_secret": old})),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    let newer = store.rotate_client_secret("c", 3600, now()).unwrap();
    service_token(&d, "c", &new).await;
    service_token(&d, "c", &newer).await;
}

#[tokio::test]
async fn sessions_end_with_the_client_that_minted_them() {
    let d = start_with(|_| {}).await;
    // Another handle on the store, as `sluice client …` in another process has.
    let cli = d.store();
    let open = |client: &'static str| {
        let d = &d;
        let cli = &cli;
        async move {
            let secret = cli
                .create_client(client, &["acme".into()], None, None, now())
                .unwrap();
            let sst = service_token(d, client, &secret).await;
            let t = ticket(
                d,
                &sst,
                json!({"user": "alice", "tenant": "acme", "groups": ["analyst"]}),
            )
            .await;
            let unused = ticket(
                d,
                &sst,
                json!({"user": "bob", "tenant": "acme", "groups": ["analyst"]}),
            )
            .await;
            (session(d, &t).await.0, unused)
        }
    };
    let ok = |token: &str| {
        d.query("SELECT count(*) FROM orders")
            .bearer_auth(token.to_string())
    };
    let (rotated, rotated_ticket) = open("leaky").await;
    let (deleted, _) = open("gone").await;
    let (kept, _) = open("planned").await;
    for t in [&rotated, &deleted, &kept] {
        assert_eq!(send(ok(t)).await.0, StatusCode::OK);
    }
    // A leak: rotate with no overlap. A clean end: delete. A planned rotation keeps sessions.
    cli.rotate_client_secret("leaky", 0, now()).unwrap();
    assert!(cli.delete_client("gone").unwrap());
    cli.rotate_client_secret("planned", 3600, now()).unwrap();
    // Within the recheck interval the daemon's cache reads the store again.
    let deadline = std::time::Instant::now()
        + Duration::from_secs(sluice::auth::SESSION_RECHECK_SECS as u64 + 5);
    loop {
        let (a, _) = send(ok(&rotated)).await;
        let (b, _) = send(ok(&deleted)).await;
        if a == StatusCode::UNAUTHORIZED && b == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still open: {a} {b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    refused(ok(&rotated), StatusCode::UNAUTHORIZED, "session_revoked").await;
    refused(ok(&deleted), StatusCode::UNAUTHORIZED, "session_revoked").await;
    // The leaked client's unexchanged ticket died too; the planned rotation's session lives.
    refused(
        d.http
            .post(d.url("/v1/sessions"))
            .json(&json!({ "ticket": rotated_ticket })),
        StatusCode::UNAUTHORIZED,
        "invalid_ticket",
    )
    .await;
    assert_eq!(send(ok(&kept)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn embedding_origins_cors_preflight_and_frame_ancestors() {
    let d = start_with(|_| {}).await;
    let resp = d
        .http
        .get(d.url("/healthz"))
        .header("origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        h["content-security-policy"],
        format!("frame-ancestors 'self' {ALLOWED_ORIGIN}").as_str()
    );
    for origin in [
        "https://evil.example",
        "null",
        "https://host.example.evil.example",
    ] {
        refused(
            d.http.get(d.url("/healthz")).header("origin", origin),
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        )
        .await;
    }
    let pre = d
        .http
        .request(reqwest::Method::OPTIONS, d.url("/v1/query"))
        .header("origin", ALLOWED_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert!(header(&pre, "access-control-allow-headers").contains("authorization"));
    // Same-origin requests pass.
    let own = d.server.url();
    let (s, _) = send(d.http.get(d.url("/healthz")).header("origin", own)).await;
    assert_eq!(s, StatusCode::OK);
    d.server.stop().await.unwrap();

    let closed = start_with(|c| c.server.allowed_origins.clear()).await;
    let resp = closed
        .http
        .get(closed.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
}

/// SSO: a daemon whose OIDC provider is the real `oidc-provider`, started by the test.
struct Sso {
    d: Daemon,
    _idp: sluice_tests::Idp,
}

async fn start_sso() -> Sso {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let callback = format!("{base}/v1/auth/oidc/callback");
    let idp = sluice_tests::Idp::start(
        &json!([{"client_id": "sluice", "client_secret": "sluice-test-secret",
                 "redirect_uris": [callback]}]),
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let secret_file = dir.path().join("oidc-secret");
    std::fs::write(&secret_file, "sluice-test-secret\n").unwrap();
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.auth.roles.admin = vec!["admin".into()];
    config.auth.roles.compliance = vec!["compliance".into()];
    config.auth.sessions.cookie_secure = false;
    config.auth.oidc = Some(toml_oidc(&format!(
        r#"issuer = "{}"
client_id = "sluice"
client_secret_file = "{}"
redirect_url = "{callback}"
tenant_claim = "tenant"
allow_http = true
post_login_redirect = "/app"
"#,
        idp.issuer,
        secret_file.display()
    )));
    config.validate().unwrap();
    let app = sluice::app::build(config).await.unwrap();
    let server = RunningServer::start_on(app, listener).unwrap();
    Sso {
        d: Daemon {
            server,
            data_dir,
            _dir: dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        },
        _idp: idp,
    }
}

fn toml_oidc(text: &str) -> sluice::config::OidcConfig {
    Config::parse(&format!("[auth.oidc]\n{text}"))
        .unwrap()
        .auth
        .oidc
        .unwrap()
}

/// Starts a login at sluice; returns the provider URL and the state cookie.
async fn begin_login(d: &Daemon, return_to: &str) -> (String, String) {
    let resp = d
        .http
        .get(d.url(&format!("/v1/auth/oidc/login?return_to={return_to}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "state=",
    ] {
        assert!(location.contains(p), "{location}");
    }
    (location, pair)
}

#[tokio::test]
async fn oidc_sso_login_with_pkce_against_the_real_provider() {
    let sso = start_sso().await;
    let d = &sso.d;

    // alice (analyst) logs in, start to finish.
    let (authorize, state_cookie) = begin_login(d, "/dashboards").await;
    let back = sluice_tests::idp_login(&authorize, "alice").await;
    assert!(back.starts_with(&d.url("/v1/auth/oidc/callback")), "{back}");
    let resp = d
        .http
        .get(&back)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/dashboards");
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("sluice_session=sls_") && c.contains("HttpOnly"))
    );
    let body: Value = resp.json().await.unwrap();
    let token = body["session_token"].as_str().unwrap().to_string();
    let (s, me) = send(d.http.get(d.url("/v1/me")).bearer_auth(&token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"], "alice");
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["groups"], json!(["analyst"]));
    assert_eq!(me["method"], "oidc_session");
    assert_eq!(me["roles"], json!(["analyst"]));
    let (s, body) = send(
        d.query("SELECT DISTINCT tenant_id FROM orders")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(tenants_of(&body), ["acme"]);

    // The same callback again: the state was used up.
    refused(
        d.http.get(&back).header("cookie", &state_cookie),
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;

    // A callback arriving in another browser (state cookie missing or different): refused.
    let (authorize, _) = begin_login(d, "/").await;
    let back = sluice_tests::idp_login(&authorize, "alice").await;
    refused(
        d.http
            .get(&back)
            .header("cookie", "sluice_oidc_state=someone-else"),
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;

    // The provider refused (user cancelled): its error is passed on, no session.
    let (_, cookie) = begin_login(d, "/").await;
    let state = cookie.split('=').nth(1).unwrap();
    refused(
        d.http
            .get(d.url(&format!(
                "/v1/auth/oidc/callback?error=access_denied&state={state}"
            )))
            .header("cookie", &cookie),
        StatusCode::UNAUTHORIZED,
        "sso_denied",
    )
    .await;

    // carol's groups map to the compliance role: the audit log, never data.
    let (authorize, state_cookie) = begin_login(d, "/").await;
    let back = sluice_tests::idp_login(&authorize, "carol").await;
    let resp = d
        .http
        .get(&back)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let carol: Value = resp.json().await.unwrap();
    let carol = carol["session_token"].as_str().unwrap().to_string();
    let (s, _) = send(d.http.get(d.url("/v1/audit/verify")).bearer_auth(&carol)).await;
    assert_eq!(s, StatusCode::OK);
    refused(
        d.query("SELECT 1").bearer_auth(&carol),
        StatusCode::FORBIDDEN,
        "forbidden_role",
    )
    .await;
    // alice may not read the audit log.
    refused(
        d.http.get(d.url("/v1/audit/verify")).bearer_auth(&token),
        StatusCode::FORBIDDEN,
        "forbidden_role",
    )
    .await;

    let Sso { d, _idp } = sso;
    let records = d.stop_and_read_audit().await;
    assert!(records.iter().any(|r| r.event == Event::AuthEvent
        && r.code.as_deref() == Some("session_created")
        && r.auth_method.as_deref() == Some("oidc_session")
        && r.user.as_deref() == Some("alice")));
    assert_audited(
        &records,
        &[Event::AuthDenied],
        &["invalid_state", "sso_denied", "forbidden_role"],
    );
}

/// The demo with its customers filtered on the caller's regions (managers exempt) and segment.
fn with_row_filters(c: &mut Config) {
    c.auth.attributes = [("regions", "integer[]"), ("segment", "text")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(jwt) = &mut c.auth.jwt {
        jwt.claims.attributes = vec!["regions".into(), "segment".into()];
    }
    let customers = c.connections[0]
        .tables
        .iter_mut()
        .find(|t| t.name == "public.customers")
        .unwrap();
    customers.row_filters = vec![
        sluice::config::RowFilterConfig {
            filter: "region_id IN attr.regions".into(),
            groups: None,
            except: vec!["managers".into()],
        },
        sluice::config::RowFilterConfig {
            filter: "segment = attr.segment".into(),
            groups: None,
            except: vec![],
        },
    ];
}

#[tokio::test]
async fn ticket_attributes_are_typed_scoped_to_their_client_and_filter_the_rows() {
    let d = start_with(with_row_filters).await;
    let mut scope = std::collections::BTreeMap::new();
    scope.insert(
        "regions".to_string(),
        vec!["1".to_string(), "2".to_string()],
    );
    scope.insert("segment".to_string(), vec!["*".to_string()]);
    let secret = d
        .store()
        .create_client("portal", &["acme".into()], None, Some(&scope), now())
        .unwrap();
    let sst = service_token(&d, "portal", &secret).await;
    let mint = |attributes: Value| {
        d.http.post(d.url("/v1/tickets")).bearer_auth(&sst).json(
            &json!({"user": "alice", "tenant": "acme", "groups": ["analyst"], "attributes": attributes}),
        )
    };
    // Outside the client's scope: a value it may not mint (one element of a list is enough),
    // an attribute it may not mint at all; of the wrong type: refused before any scope check.
    for (attributes, status, code) in [
        (
            json!({"regions": [1, 3], "segment": "smb"}),
            StatusCode::FORBIDDEN,
            "attribute_not_allowed",
        ),
        (
            json!({"regions": [4]}),
            StatusCode::FORBIDDEN,
            "attribute_not_allowed",
        ),
        (
            json!({"regions": [1], "cost_centre": "x"}),
            StatusCode::FORBIDDEN,
            "attribute_not_allowed",
        ),
        (
            json!({"regions": "1"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"regions": [1], "segment": ["smb"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        refused(mint(attributes), status, code).await;
    }
    // A group that exempts from a row filter is minted only by a client whose group scope
    // names it: this one has none, so its tickets cannot escape the region filter.
    refused(
        d.http
            .post(d.url("/v1/tickets"))
            .bearer_auth(&sst)
            .json(&json!({
            "user": "alice", "tenant": "acme", "groups": ["analyst", "managers"],
            "attributes": {"regions": [1], "segment": "smb"}})),
        StatusCode::FORBIDDEN,
        "group_not_allowed",
    )
    .await;
    let scoped = d
        .store()
        .create_client(
            "managers-portal",
            &["acme".into()],
            Some(&["analyst".into(), "managers".into()]),
            None,
            now(),
        )
        .unwrap();
    let scoped = service_token(&d, "managers-portal", &scoped).await;
    ticket(
        &d,
        &scoped,
        json!({"user": "mgr", "tenant": "acme", "groups": ["analyst", "managers"],
               "attributes": {"segment": "smb"}}),
    )
    .await;
    // Within it: the session's queries see the rows of those regions and that segment only,
    // exactly what an unfiltered caller (a manager's JWT of the same tenant, exempt from the
    // region filter) sees when it asks for them.
    let t = ticket(
        &d,
        &sst,
        json!({"user": "alice", "tenant": "acme", "groups": ["analyst"],
               "attributes": {"regions": [1, 2], "segment": "enterprise"}}),
    )
    .await;
    let (token, _) = session(&d, &t).await;
    let mut manager = claims("mgr", "acme", &["analyst", "managers"]);
    manager["segment"] = json!("enterprise");
    let manager = d.hs256(&manager);
    for (mine, theirs) in [
        (
            "SELECT region_id, count(*) FROM customers GROUP BY region_id ORDER BY region_id",
            "SELECT region_id, count(*) FROM customers WHERE region_id IN (1, 2) GROUP BY region_id ORDER BY region_id",
        ),
        (
            "SELECT count(*) FROM orders o JOIN customers c ON o.customer_id = c.customer_id",
            "SELECT count(*) FROM orders o JOIN customers c ON o.customer_id = c.customer_id WHERE c.region_id IN (1, 2)",
        ),
    ] {
        let (s, got) = send(d.query(mine).bearer_auth(&token)).await;
        assert_eq!(s, StatusCode::OK, "{got}");
        let (s, want) = send(d.query(theirs).bearer_auth(&manager)).await;
        assert_eq!(s, StatusCode::OK, "{want}");
        assert_eq!(got["rows"], want["rows"], "{mine}");
        assert!(!got["rows"].as_array().unwrap().is_empty());
    }
    let (_, regions) = send(
        d.query("SELECT DISTINCT region_id FROM customers ORDER BY 1")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(regions["rows"], json!([[1], [2]]));
    // A JWT without the attributes is refused, not shown every row; a manager's without a
    // segment too (the exemption is from the region filter only).
    let bare = d.hs256(&claims("bob", "acme", &["analyst"]));
    refused(
        d.query("SELECT count(*) FROM customers").bearer_auth(&bare),
        StatusCode::FORBIDDEN,
        "attribute_missing",
    )
    .await;
    let bare_manager = d.hs256(&claims("mgr", "acme", &["analyst", "managers"]));
    refused(
        d.query("SELECT count(*) FROM customers")
            .bearer_auth(&bare_manager),
        StatusCode::FORBIDDEN,
        "attribute_missing",
    )
    .await;
    // Tables without filters need no attribute.
    let (s, _) = send(d.query("SELECT count(*) FROM orders").bearer_auth(&bare)).await;
    assert_eq!(s, StatusCode::OK);
    // The audit log says which filters and values applied.
    let records = d.stop_and_read_audit().await;
    let filtered: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == Event::QueryAttempt && r.user.as_deref() == Some("alice"))
        .collect();
    assert!(!filtered.is_empty());
    for r in filtered {
        assert_eq!(r.row_filters.len(), 2, "{:?}", r.row_filters);
        assert_eq!(r.row_filters[0].value, Some(json!([1, 2])));
        assert_eq!(r.row_filters[1].value, Some(json!("enterprise")));
    }
}
