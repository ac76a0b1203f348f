//! Each user's own warehouse credentials, end to end: the connect flow against a real OAuth 2.0
//! authorization server (`oidc-provider`, `tests/idp`, access tokens of 6 s, refresh-token
//! rotation), queries gated on the caller's own credential, background refresh before expiry,
//! a refresh token revoked at the server leading to `reauth_required`, an authorization server
//! that is down (retries, no credential lost), and many credentials due at once.
//!
//! The demo connection is the embedded engine: it does not itself consume the token (the REST
//! warehouses of the connectors issue do), so these tests check the gate and the lifecycle; the
//! token is what the authorization server issued, verified by refreshing it there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::config::{Config, CredentialMode, OAuthClientConfig, VaultConfig};
use sluice::http::server::RunningServer;
use sluice::vault::store::CredentialStore;
use sluice_audit::{Event, open_read_only, read_settled};

const CLIENT: &str = "sluice-wh";
const SECRET: &str = "wh-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Env {
    server: RunningServer,
    idp: sluice_tests::Idp,
    data_dir: PathBuf,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn vault_config(dir: &std::path::Path) -> VaultConfig {
    let key = dir.join("vault.key");
    std::fs::write(&key, sluice::vault::crypto::new_key().unwrap()).unwrap();
    VaultConfig {
        key_env: None,
        key_file: Some(key),
        previous_key_files: vec![],
        previous_key_envs: vec![],
        refresh_at_percent: 80,
        refresh_check_ms: 250,
        max_concurrent_refreshes: 8,
    }
}

fn oauth(dir: &std::path::Path, token_base: &str, callback: &str) -> OAuthClientConfig {
    let secret = dir.join("wh-secret");
    std::fs::write(&secret, SECRET).unwrap();
    OAuthClientConfig {
        authorize_url: format!("{token_base}/auth"),
        token_url: format!("{token_base}/token"),
        revocation_url: Some(format!("{token_base}/token/revocation")),
        client_id: CLIENT.into(),
        client_secret_env: None,
        client_secret_file: Some(secret),
        scopes: vec!["openid".into(), "offline_access".into()],
        redirect_url: callback.into(),
        allow_http: true,
    }
}

/// A warehouse double that does what a REST warehouse does with the bearer token: it asks the
/// authorization server who the token belongs to (the real provider's userinfo endpoint), answers
/// 401 when the server refuses the token, and otherwise returns one row, the token's `sub`. Its
/// one fault: it also refuses the token the test names (a warehouse that stopped accepting a
/// token the vault still holds; revoking it at oidc-provider would revoke the whole grant).
struct UserinfoWarehouse {
    userinfo: String,
    http: reqwest::Client,
    refused: Arc<AtomicUsize>,
    reject: Arc<std::sync::Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl sluice_connectors::Connector for UserinfoWarehouse {
    fn kind(&self) -> sluice_connectors::WarehouseKind {
        sluice_connectors::WarehouseKind::Embedded
    }

    async fn execute(
        &self,
        request: sluice_connectors::QueryRequest<'_>,
    ) -> Result<sluice_connectors::QueryStream, sluice_connectors::ConnectorError> {
        use arrow::array::{RecordBatch, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use futures::StreamExt;
        use sluice_connectors::{ConnectorError, UserCredential};
        let Some(UserCredential::Bearer(token)) = request.credential else {
            return Err(ConnectorError::Config("no user token".into()));
        };
        let rejected = self.reject.lock().unwrap().clone();
        if rejected.as_deref() == Some(token) || rejected.as_deref() == Some("*") {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(ConnectorError::Unauthorized(
                "401 from the warehouse".into(),
            ));
        }
        let r = self
            .http
            .get(&self.userinfo)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(e.to_string()))?;
        if r.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(ConnectorError::Unauthorized(
                "401 from the warehouse".into(),
            ));
        }
        let who: Value = r.json().await.unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("sub", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec![
                who["sub"].as_str().unwrap().to_string(),
            ]))],
        )
        .unwrap();
        Ok(sluice_connectors::QueryStream {
            schema,
            batches: futures::stream::iter(vec![Ok(batch)]).boxed(),
            warehouse_query_id: None,
        })
    }
}

async fn start() -> Env {
    start_with(None, "6").await
}

type Faults = (Arc<AtomicUsize>, Arc<std::sync::Mutex<Option<String>>>);

async fn start_with(userinfo_warehouse: Option<Faults>, token_ttl: &str) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let callback = format!("{base}/v1/connections/oauth/callback");
    let idp = sluice_tests::Idp::start(
        &json!([{"client_id": CLIENT, "client_secret": SECRET, "redirect_uris": [callback]}]),
        &[("IDP_ACCESS_TOKEN_TTL", token_ttl)],
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config: Config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.auth.sessions.cookie_secure = false;
    config.vault = Some(vault_config(dir.path()));
    config.connections[0].credential = CredentialMode::Oauth;
    config.connections[0].oauth = Some(oauth(dir.path(), &idp.issuer, &callback));
    config.validate().unwrap();
    let mut overrides: std::collections::BTreeMap<String, Arc<dyn sluice_connectors::Connector>> =
        Default::default();
    if let Some((refused, reject)) = userinfo_warehouse {
        overrides.insert(
            "demo".into(),
            Arc::new(UserinfoWarehouse {
                userinfo: format!("{}/me", idp.issuer),
                http: reqwest::Client::new(),
                refused,
                reject,
            }),
        );
    }
    let app = sluice::app::build_with_connectors(config, None, overrides)
        .await
        .unwrap();
    let server = RunningServer::start_on(app, listener).unwrap();
    Env {
        server,
        idp,
        data_dir,
        dir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl Env {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.server.url())
    }

    fn token(&self, user: &str, tenant: &str) -> String {
        sluice::demo::token(&self.data_dir, user, tenant, &["analyst".into()]).unwrap()
    }

    async fn query(&self, token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/v1/query"))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT DISTINCT tenant_id FROM orders"}))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn status(&self, token: &str) -> Value {
        let v: Value = self
            .http
            .get(self.url("/v1/connections"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["connections"][0].clone()
    }

    /// The connect flow, as a browser would run it.
    async fn connect(&self, token: &str, login: &str) {
        let r = self
            .http
            .get(self.url("/v1/connections/demo/authorize"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.contains("code_challenge_method=S256"),
            "{location}"
        );
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let back = sluice_tests::idp_login(&location, login).await;
        let r = self
            .http
            .get(&back)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "connected");
    }

    /// The refresh token the vault holds for a user (the test has the key).
    fn refresh_token(&self, user: &str, tenant: &str) -> String {
        let keys = sluice::vault::keyring(&vault_config_at(self.dir.path())).unwrap();
        let store = sluice::vault::store::VaultStore::open(
            &self.data_dir.join(sluice::vault::store::VAULT_FILE),
        )
        .unwrap();
        let owner = sluice::vault::store::Owner {
            tenant: tenant.into(),
            user: user.into(),
            connection: "demo".into(),
        };
        let rec = store.get(&owner, &keys).unwrap().unwrap();
        rec.secret.refresh_token.clone().unwrap()
    }
}

/// The vault configuration written by `vault_config` (same key file).
fn vault_config_at(dir: &std::path::Path) -> VaultConfig {
    VaultConfig {
        key_file: Some(dir.join("vault.key")),
        ..vault_config_without_writing()
    }
}

fn vault_config_without_writing() -> VaultConfig {
    VaultConfig {
        key_env: None,
        key_file: None,
        previous_key_files: vec![],
        previous_key_envs: vec![],
        refresh_at_percent: 80,
        refresh_check_ms: 250,
        max_concurrent_refreshes: 8,
    }
}

/// Polls until `f` holds, or fails after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connect_query_refresh_before_expiry_then_revocation_means_reauth() {
    let env = start().await;
    let alice = env.token("alice", "acme");

    // No credential yet: the query says where to connect.
    let (s, body) = env.query(&alice).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("reauth_required")),
        "{body}"
    );
    assert_eq!(body["authorize_url"], "/v1/connections/demo/authorize");
    assert_eq!(env.status(&alice).await["status"], "missing");

    env.connect(&alice, "alice").await;
    let st = env.status(&alice).await;
    assert_eq!(st["status"], "connected", "{st}");
    let first_expiry = st["expires_at"].as_i64().unwrap();
    let (s, body) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Another user of the same tenant has no credential: never alice's.
    let bob = env.token("bob", "acme");
    let (s, body) = env.query(&bob).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("reauth_required"))
    );

    // The refresher renews the 6 s token before it expires.
    let old_refresh = env.refresh_token("alice", "acme");
    wait_for(Duration::from_secs(10), "a refresh", || async {
        env.status(&alice).await["expires_at"].as_i64().unwrap() > first_expiry
    })
    .await;
    assert!(
        now() <= first_expiry,
        "the refresh came after the token expired"
    );
    // Rotation: the server issued a new refresh token, and the vault keeps it.
    assert_ne!(env.refresh_token("alice", "acme"), old_refresh);
    tokio::time::sleep(Duration::from_secs((first_expiry - now() + 1).max(0) as u64)).await;
    let (s, _) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK, "after the first token's expiry");

    // The refresh token is revoked at the server (RFC 7009), out of band.
    let rt = env.refresh_token("alice", "acme");
    let r = env
        .http
        .post(format!("{}/token/revocation", env.idp.issuer))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", rt.as_str()), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_for(
        Duration::from_secs(15),
        "the credential to expire",
        || async { env.status(&alice).await["status"] == "expired" },
    )
    .await;
    let (s, body) = env.query(&alice).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("reauth_required")),
        "{body}"
    );

    // Reconnecting fixes it; disconnecting removes it.
    env.connect(&alice, "alice").await;
    let (s, _) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK);
    let r = env
        .http
        .delete(env.url("/v1/connections/demo/credential"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(env.status(&alice).await["status"], "missing");

    let Env {
        server, data_dir, ..
    } = env;
    server.stop().await.unwrap();
    let records = read_settled(
        &open_read_only(&data_dir.join(sluice::app::AUDIT_FILE)).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    for code in [
        "credential_connected",
        "credential_refreshed",
        "credential_expired",
        "credential_disconnected",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r.event == Event::CredentialEvent && r.code.as_deref() == Some(code)),
            "no {code} record"
        );
    }
    assert!(records.iter().any(|r| r.event == Event::QueryDenied
        && r.code.as_deref() == Some("reauth_required")
        && r.user.as_deref() == Some("bob")));
}

#[tokio::test]
async fn an_authorization_server_that_is_down_means_retries_and_no_lost_credential() {
    let env = start().await;
    let alice = env.token("alice", "acme");
    env.connect(&alice, "alice").await;
    let expiry = env.status(&alice).await["expires_at"].as_i64().unwrap();
    env.idp.set_down(true).await;
    // The refresher keeps trying (with backoff) and keeps the credential.
    wait_for(Duration::from_secs(15), "two failed refreshes", || async {
        env.idp.state().await["token_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let st = env.status(&alice).await;
    assert_ne!(st["status"], "expired", "{st}");
    // Once the token has expired, a query says so without asking the user to reconnect.
    if now() > expiry {
        let (s, body) = env.query(&alice).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("credential_refresh_failing")
            ),
            "{body}"
        );
    }
    env.idp.set_down(false).await;
    wait_for(
        Duration::from_secs(20),
        "a refresh after the outage",
        || async {
            let st = env.status(&alice).await;
            st["status"] == "connected" && st["expires_at"].as_i64().unwrap() > now()
        },
    )
    .await;
    let (s, body) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Many credentials due at once: every one refreshed exactly once, never more than the
/// configured number in flight, each rotated refresh token stored. The token endpoint here is a
/// counting stand-in (1,000 real logins would take minutes): it checks the client's credentials
/// and grants each refresh token once, answering `invalid_grant` on reuse, as oidc-provider does.
#[tokio::test]
async fn a_thousand_credentials_due_at_once_refresh_once_each_with_bounded_concurrency() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Counting {
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        uses: Mutex<HashMap<String, usize>>,
    }
    let counting = Arc::new(Counting::default());
    let c = Arc::clone(&counting);
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let c = Arc::clone(&c);
            async move {
                let n = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                c.max_in_flight.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                // The test's tokens are plain `rt-<n>`: no percent-encoding to undo.
                let rt = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("refresh_token="))
                    .unwrap_or_default()
                    .to_string();
                let first = {
                    let mut uses = c.uses.lock().unwrap();
                    let u = uses.entry(rt.clone()).or_insert(0);
                    *u += 1;
                    *u == 1
                };
                c.in_flight.fetch_sub(1, Ordering::SeqCst);
                if first && rt.starts_with("rt-") {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"access_token": format!("at2-{rt}"), "token_type": "Bearer",
                                          "expires_in": 3600, "refresh_token": format!("rt2-{rt}")})),
                    )
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"error": "invalid_grant"})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.vault = Some(vault_config(dir.path()));
    config.connections[0].credential = CredentialMode::Oauth;
    config.connections[0].oauth = Some(oauth(dir.path(), &base, "http://127.0.0.1/cb"));
    let vault = Arc::new(sluice::vault::Vault::from_config(&config).unwrap().unwrap());
    let (audit, _writer) = sluice_audit::AuditLog::open(&dir.path().join("audit.sqlite")).unwrap();

    const USERS: usize = 1000;
    let owner = |i: usize| sluice::vault::store::Owner {
        tenant: "acme".into(),
        user: format!("user-{i}"),
        connection: "demo".into(),
    };
    for i in 0..USERS {
        vault
            .store_grant(
                &owner(i),
                format!("at-{i}"),
                Some(format!("rt-{i}")),
                Some(Duration::from_secs(1)),
                String::new(),
            )
            .await
            .unwrap();
    }
    let task = tokio::spawn(Arc::clone(&vault).refresher(audit.clone()));
    let keys = sluice::vault::keyring(config.vault.as_ref().unwrap()).unwrap();
    wait_for(
        Duration::from_secs(60),
        "every credential refreshed",
        || async {
            counting.uses.lock().unwrap().len() >= USERS
                && vault.store.due(now() + 1, 10).unwrap().is_empty()
        },
    )
    .await;
    // Let any stray second refresh happen before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    let uses = counting.uses.lock().unwrap().clone();
    assert_eq!(
        uses.len(),
        USERS,
        "each credential's refresh token presented"
    );
    assert!(
        uses.values().all(|n| *n == 1),
        "a refresh token was presented twice"
    );
    let max = counting.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 8, "{max} refreshes in flight, limit 8");
    for i in [0, 499, 999] {
        let rec = vault.store.get(&owner(i), &keys).unwrap().unwrap();
        assert_eq!(
            rec.secret.refresh_token.as_deref(),
            Some(format!("rt2-rt-{i}").as_str())
        );
        assert_eq!(rec.meta.status, sluice::vault::store::Status::Connected);
    }
}

fn rot_owner(i: usize) -> sluice::vault::store::Owner {
    sluice::vault::store::Owner {
        tenant: "acme".into(),
        user: format!("u{i}"),
        connection: "wh".into(),
    }
}

fn put(
    store: &sluice::vault::store::VaultStore,
    keys: &sluice::vault::crypto::Keyring,
    i: usize,
    tag: &str,
) {
    use sluice::vault::store::{Secret, Status, Write};
    let secret = Secret {
        access_token: Some(format!("{tag}-{i}")),
        refresh_token: None,
        password: None,
    };
    let w = Write {
        kind: "oauth",
        status: Status::Connected,
        scopes: "",
        expires_at: Some(now() + 3600),
        refresh_due_at: Some(now() + 3000),
        failures: 0,
        secret: &secret,
    };
    store.put(&rot_owner(i), keys, &w, None, now()).unwrap();
}

/// Key rotation while credentials are read and written: every record ends under the new key,
/// every read during the rotation succeeds.
#[tokio::test]
async fn key_rotation_in_the_middle_of_traffic() {
    use sluice::vault::crypto::{Keyring, decode_key};
    use sluice::vault::store::VaultStore;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(VaultStore::open(&dir.path().join("v.sqlite")).unwrap());
    let (k1, k2) = (
        decode_key(&sluice::vault::crypto::new_key().unwrap()).unwrap(),
        decode_key(&sluice::vault::crypto::new_key().unwrap()).unwrap(),
    );
    let old = Arc::new(Keyring::new(&k1, &[]).unwrap());
    let both = Arc::new(Keyring::new(&k2, &[&k1]).unwrap());
    for i in 0..300 {
        put(&store, &old, i, "v1");
    }
    // Traffic: readers and writers with the new keyring (as a restarted daemon would have).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for t in 0..2 {
        let (store, keys, stop) = (Arc::clone(&store), Arc::clone(&both), Arc::clone(&stop));
        traffic.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let i = (n * 7 + t) % 300;
                let rec = store.get(&rot_owner(i), &keys).unwrap().unwrap();
                assert!(
                    rec.secret
                        .access_token
                        .as_deref()
                        .unwrap()
                        .ends_with(&format!("-{i}"))
                );
                if n % 5 == 0 {
                    put(&store, &keys, i, "v2");
                }
                n += 1;
            }
            n
        }));
    }
    let rotated = store.rotate(&both, now()).unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in traffic {
        assert!(t.join().unwrap() > 0);
    }
    assert!(rotated > 0);
    assert!(
        store
            .sealed_with_other_keys(both.current_id())
            .unwrap()
            .is_empty()
    );
    // The old key alone can no longer open anything; the new one alone opens everything.
    let new_only = Keyring::new(&k2, &[]).unwrap();
    for i in 0..300 {
        assert!(store.get(&rot_owner(i), &new_only).unwrap().is_some());
        assert!(store.get(&rot_owner(i), &old).is_err());
    }
}

#[tokio::test]
async fn a_warehouse_that_refuses_the_token_gets_one_refresh_and_one_retry() {
    let refused = Arc::new(AtomicUsize::new(0));
    let reject = Arc::new(std::sync::Mutex::new(None));
    // Tokens of a minute: the vault has no reason to refresh before the warehouse refuses.
    let env = start_with(Some((Arc::clone(&refused), Arc::clone(&reject))), "60").await;
    let alice = env.token("alice", "acme");
    env.connect(&alice, "alice").await;
    // The warehouse sees alice's own token: the row is the token's subject.
    let (s, body) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([["alice"]]));

    // The warehouse stops accepting the token the vault still thinks is good: it answers 401,
    // sluice refreshes once (at the real server) and retries with the new token.
    let at = access_token(&env, "alice", "acme");
    *reject.lock().unwrap() = Some(at.clone());
    let (s, body) = env.query(&alice).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([["alice"]]));
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "exactly one 401, then the retry worked"
    );
    assert_ne!(access_token(&env, "alice", "acme"), at);

    // A warehouse that refuses even the fresh token: one refresh, one retry, then the user is
    // asked to authorize again (no loop).
    *reject.lock().unwrap() = Some("*".into());
    let (s, body) = env.query(&alice).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("reauth_required")),
        "{body}"
    );
    assert_eq!(refused.load(Ordering::SeqCst), 3);
}

fn access_token(env: &Env, user: &str, tenant: &str) -> String {
    let keys = sluice::vault::keyring(&vault_config_at(env.dir.path())).unwrap();
    let store = sluice::vault::store::VaultStore::open(
        &env.data_dir.join(sluice::vault::store::VAULT_FILE),
    )
    .unwrap();
    let owner = sluice::vault::store::Owner {
        tenant: tenant.into(),
        user: user.into(),
        connection: "demo".into(),
    };
    store
        .get(&owner, &keys)
        .unwrap()
        .unwrap()
        .secret
        .access_token
        .clone()
        .unwrap()
}
