//! Shared by the REST-warehouse tests: a sluice with one connection that uses each user's own
//! OAuth token, the real OAuth server (`oidc-provider`) behind it, and alice's account
//! connected through the real authorization-code flow.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::json;
use sluice::config::{ConnectionConfig, CredentialMode, OAuthClientConfig, VaultConfig};
use sluice::http::server::RunningServer;

/// The OAuth client sluice is registered as at the test IdP.
pub const CLIENT: &str = "sluice-wh";
const SECRET: &str = "wh-secret";

/// Whether the newest query record of sluice's audit log is an attempt (credential and
/// authentication events in between, such as a token refreshed for a retry, do not count):
/// what a warehouse layer checks as each statement arrives, since the attempt is committed
/// before the warehouse sees anything.
pub fn attempt_is_newest(audit: &std::path::Path) -> bool {
    use sluice_audit::Event;
    sluice_audit::open_read_only(audit)
        .ok()
        .and_then(|c| sluice_audit::read_all(&c).ok())
        .and_then(|r| {
            r.into_iter().rev().find(|r| {
                matches!(
                    r.event,
                    Event::QueryAttempt | Event::QueryCompletion | Event::QueryDenied
                )
            })
        })
        .is_some_and(|r| r.event == Event::QueryAttempt)
}

/// A running sluice with one per-user OAuth connection.
pub struct OauthSluice {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The daemon's data directory.
    pub data_dir: PathBuf,
    /// The OAuth server.
    pub idp: sluice_tests::Idp,
    /// A client that does not follow redirects.
    pub http: reqwest::Client,
    server: Option<RunningServer>,
    vault: VaultConfig,
    _dir: tempfile::TempDir,
}

/// The IdP's userinfo endpoint answers 200 for a live access token: what the warehouse layers
/// use to check bearer tokens against the real server. Returns the token and its subject.
pub async fn token_ok(userinfo: &str, headers: &HeaderMap) -> Option<(String, String)> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    let r = reqwest::Client::new()
        .get(userinfo)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return None;
    }
    let info: serde_json::Value = r.json().await.unwrap();
    Some((
        token.to_string(),
        info["sub"].as_str().unwrap_or_default().to_string(),
    ))
}

impl OauthSluice {
    /// Starts the IdP and sluice with `connection` (kind, endpoint, tables…) set to use each
    /// user's own OAuth token at the IdP, tenant A's alice connected.
    pub async fn start(connection: ConnectionConfig, max_rows: u64) -> OauthSluice {
        Self::start_with(connection, max_rows, false).await
    }

    /// [`OauthSluice::start`], keeping the demo's embedded connection (`demo`: public
    /// products and regions, tenant-protected customers and orders of `acme`, `globex`,
    /// `initech`) next to it, for federated queries.
    pub async fn start_with_demo(connection: ConnectionConfig, max_rows: u64) -> OauthSluice {
        Self::start_with(connection, max_rows, true).await
    }

    async fn start_with(
        mut connection: ConnectionConfig,
        max_rows: u64,
        keep_demo: bool,
    ) -> OauthSluice {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let callback = format!("{base}/v1/connections/oauth/callback");
        let idp = sluice_tests::Idp::start(
            &json!([{"client_id": CLIENT, "client_secret": SECRET, "redirect_uris": [callback]}]),
            &[("IDP_ACCESS_TOKEN_TTL", "120")],
        );
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let key = dir.path().join("vault.key");
        std::fs::write(&key, sluice::vault::crypto::new_key().unwrap()).unwrap();
        let secret_file = dir.path().join("wh-secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
        config.auth.sessions.cookie_secure = false;
        config.limits.max_result_rows = max_rows;
        // The warehouse layers check that each statement arrives after its attempt record is
        // committed: the strict order.
        config.audit.durability = sluice::config::Durability::BeforeWarehouse;
        let vault = VaultConfig {
            key_env: None,
            key_file: Some(key),
            previous_key_files: vec![],
            previous_key_envs: vec![],
            refresh_at_percent: 80,
            refresh_check_ms: 1000,
            max_concurrent_refreshes: 4,
        };
        config.vault = Some(vault.clone());
        // Callers carry a region and a list of accounts (`token_with`), which the
        // `[[connections.tables.row_filters]]` of a test's tables may bind.
        config.auth.attributes = [("region", "text"), ("accounts", "integer[]")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(jwt) = &mut config.auth.jwt {
            jwt.claims.attributes = vec!["region".into(), "accounts".into()];
        }
        connection.credential = CredentialMode::Oauth;
        connection.oauth = Some(OAuthClientConfig {
            authorize_url: format!("{}/auth", idp.issuer),
            token_url: format!("{}/token", idp.issuer),
            revocation_url: Some(format!("{}/token/revocation", idp.issuer)),
            client_id: CLIENT.into(),
            client_secret_env: None,
            client_secret_file: Some(secret_file),
            scopes: vec!["openid".into(), "offline_access".into()],
            redirect_url: callback,
            allow_http: true,
        });
        if keep_demo {
            config.connections.push(connection);
        } else {
            config.connections = vec![connection];
        }
        config.validate().unwrap();
        let app = sluice::app::build(config).await.unwrap();
        let server = RunningServer::start_on(app, listener).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        OauthSluice {
            base,
            data_dir,
            idp,
            http,
            server: Some(server),
            vault,
            _dir: dir,
        }
    }

    /// A sluice token for `user` of `tenant` in the analyst group.
    pub fn token(&self, user: &str, tenant: &str) -> String {
        sluice::demo::token(&self.data_dir, user, tenant, &["analyst".into()]).unwrap()
    }

    /// A sluice token for `user` of `tenant` in `groups`, carrying `attributes` (claims).
    pub fn token_with(
        &self,
        user: &str,
        tenant: &str,
        groups: &[&str],
        attributes: serde_json::Value,
    ) -> String {
        let secret = sluice::demo::secret(&self.data_dir).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({
            "sub": user, "tenant": tenant, "groups": groups,
            "iss": sluice::demo::ISSUER, "aud": sluice::demo::AUDIENCE,
            "iat": now, "exp": now + 600,
        });
        for (k, v) in attributes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    }

    /// Alice of tenant A, an analyst of region `emea` managing accounts 1 and 3: the caller
    /// [`OauthSluice::assert_row_filters`] filters.
    pub fn regional(&self) -> String {
        self.token_with(
            "alice",
            "A",
            &["analyst"],
            json!({"region": "emea", "accounts": [1, 3]}),
        )
    }

    /// Row filters through a warehouse, for a table `t` (`tenant, id, region, account`
    /// columns named `c`, filtered `region = attr.region` and `account IN attr.accounts`, both
    /// except for `managers`) holding [`SALES_ROWS`]: alice's answers with attributes equal
    /// the same warehouse's answers to the explicit predicate asked by alice as a manager
    /// (exempt); no attribute is refused; an empty list sees nothing. `user` is connected.
    pub async fn assert_row_filters(&self, t: &str, c: [&str; 4]) -> serde_json::Value {
        let [_, id, region, account] = c;
        let filtered = self.regional();
        let manager = self.token_with("alice", "A", &["analyst", "managers"], json!({}));
        let rows = |b: &serde_json::Value| b["rows"].clone();
        for (plain, explicit) in [
            (
                format!("SELECT {id} FROM {t} ORDER BY {id}"),
                format!(
                    "SELECT {id} FROM {t} WHERE {region} = 'emea' AND {account} IN (1, 3) ORDER BY {id}"
                ),
            ),
            (
                format!(
                    "SELECT {account}, count(*) AS n FROM {t} GROUP BY {account} ORDER BY {account}"
                ),
                format!(
                    "SELECT {account}, count(*) AS n FROM {t} WHERE {region} = 'emea' AND {account} IN (1, 3) GROUP BY {account} ORDER BY {account}"
                ),
            ),
        ] {
            let r = self.query(&filtered, &plain).await;
            assert_eq!(r.status(), 200);
            let got: serde_json::Value = r.json().await.unwrap();
            let r = self.query(&manager, &explicit).await;
            assert_eq!(r.status(), 200);
            let want: serde_json::Value = r.json().await.unwrap();
            assert_eq!(rows(&got), rows(&want), "{plain}");
            assert!(!rows(&got).as_array().unwrap().is_empty(), "{plain}");
        }
        let all: serde_json::Value = self
            .query(&manager, &format!("SELECT {id} FROM {t}"))
            .await
            .json()
            .await
            .unwrap();
        let mine: serde_json::Value = self
            .query(&filtered, &format!("SELECT {id} FROM {t}"))
            .await
            .json()
            .await
            .unwrap();
        assert!(
            all["rows"].as_array().unwrap().len() > mine["rows"].as_array().unwrap().len(),
            "the filter narrows"
        );
        // No attribute: refused; an empty list: nothing.
        let bare = self.token("alice", "A");
        let r = self.query(&bare, &format!("SELECT {id} FROM {t}")).await;
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["code"],
            "attribute_missing"
        );
        let none = self.token_with(
            "alice",
            "A",
            &["analyst"],
            json!({"region": "emea", "accounts": []}),
        );
        let r = self.query(&none, &format!("SELECT {id} FROM {t}")).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["rows"], json!([]), "{body}");
        mine
    }

    /// Connects `user`'s account at the IdP to `connection` (authorization-code flow).
    pub async fn connect(&self, connection: &str, token: &str, login: &str) {
        let r = self
            .http
            .get(format!(
                "{}/v1/connections/{connection}/authorize",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let back = sluice_tests::idp_login(&location, login).await;
        let r = self
            .http
            .get(&back)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// `POST /v1/query` as `token`.
    pub async fn query(&self, token: &str, sql: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/query", self.base))
            .bearer_auth(token)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/query` with caller parameters; returns the status and the JSON body.
    pub async fn query_params(
        &self,
        token: &str,
        sql: &str,
        params: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/v1/query", self.base))
            .bearer_auth(token)
            .json(&json!({ "sql": sql, "params": params }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// The access token the vault holds for a user and connection.
    pub fn held_token(&self, tenant: &str, user: &str, connection: &str) -> String {
        let keys = sluice::vault::keyring(&self.vault).unwrap();
        let store = sluice::vault::store::VaultStore::open(
            &self.data_dir.join(sluice::vault::store::VAULT_FILE),
        )
        .unwrap();
        let owner = sluice::vault::store::Owner {
            tenant: tenant.into(),
            user: user.into(),
            connection: connection.into(),
        };
        sluice::vault::store::CredentialStore::get(&store, &owner, &keys)
            .unwrap()
            .unwrap()
            .secret
            .access_token
            .clone()
            .unwrap()
    }

    /// The audit records of the run (oldest first).
    pub fn audit_records(&self) -> Vec<sluice_audit::AuditRecord> {
        sluice_audit::read_settled(
            &sluice_audit::open_read_only(&self.data_dir.join(sluice::app::AUDIT_FILE)).unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
    }

    /// Stops the daemon.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }
}

/// The demo connection turned into a REST warehouse connection with the given tables (TOML).
pub fn rest_connection(
    id: &str,
    kind: sluice::config::ConnectionKind,
    tables_toml: &str,
) -> ConnectionConfig {
    let data_dir = std::env::temp_dir();
    let mut c = sluice::demo::config(&data_dir, "127.0.0.1:0")
        .unwrap()
        .connections
        .remove(0);
    c.id = id.into();
    c.kind = kind;
    c.tables = tables(tables_toml);
    c
}

/// `[[connections.tables]]` (TOML) as configuration.
pub fn tables(tables_toml: &str) -> Vec<sluice::config::TableConfig> {
    sluice::config::Config::parse(&format!(
        "[auth]\n[[connections]]\nid = \"x\"\nkind = \"embedded\"\n{tables_toml}"
    ))
    .unwrap()
    .connections
    .remove(0)
    .tables
}

/// The rows of the row-filter table of [`OauthSluice::assert_row_filters`]:
/// `(tenant, id, region, account)`, as SQL `VALUES` tuples.
pub const SALES_ROWS: &str = "('A', 1, 'emea', 1), ('A', 2, 'emea', 2), ('A', 3, 'emea', 3), \
('A', 4, 'apac', 1), ('A', 5, 'apac', 3), ('A', 6, 'emea', 1), ('A', 7, 'emea', 3), \
('B', 8, 'emea', 1), ('B', 9, 'emea', 3), ('A', 10, 'amer', 3)";

/// The `[[connections.tables]]` of the row-filter table `name` with columns `c`.
pub fn sales_table(name: &str, c: [&str; 4]) -> String {
    format!(
        r#"
[[connections.tables]]
name = "{name}"
access = "protected"
tenant_column = "{}"
columns = ["{}", "{}", "{}", "{}"]
[[connections.tables.row_filters]]
filter = "{} = attr.region"
except = ["managers"]
[[connections.tables.row_filters]]
filter = "{} IN attr.accounts"
except = ["managers"]
"#,
        c[0], c[0], c[1], c[2], c[3], c[2], c[3]
    )
}

/// Waits until `f` holds, failing the test after `limit`.
pub async fn wait_for(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
