//! Shared harness of the end-to-end tests: the real OIDC / OAuth 2.0 provider (`tests/idp`,
//! npm `oidc-provider`) run as a child process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the provider may take to print its ready line.
const IDP_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running test identity provider; killed on drop.
pub struct Idp {
    /// Issuer URL (no trailing slash).
    pub issuer: String,
    child: Child,
}

impl Idp {
    /// Starts `tests/idp/server.mjs` with the given clients (JSON array) and extra environment.
    /// Fails the test (never skips) when node or the npm packages are missing: `.ci/run`
    /// installs them.
    pub fn start(clients: &serde_json::Value, env: &[(&str, &str)]) -> Idp {
        let dir = repo_root().join("tests").join("idp");
        assert!(
            dir.join("node_modules").join("oidc-provider").exists(),
            "the test IdP is not installed: run `npm ci` in {} (bash .ci/run does)",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("server.mjs"))
            .env("IDP_PORT", "0")
            .env("IDP_CLIENTS", clients.to_string())
            .env("IDP_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("node must be installed to run the test IdP");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let started = Instant::now();
        let line = rx
            .recv_timeout(IDP_START_TIMEOUT)
            .unwrap_or_else(|_| panic!("the test IdP did not start in {IDP_START_TIMEOUT:?}"));
        let issuer = line
            .trim()
            .strip_prefix("IDP_READY ")
            .unwrap_or_else(|| panic!("unexpected IdP output {line:?}"))
            .to_string();
        eprintln!("test IdP at {issuer} in {:?}", started.elapsed());
        Idp { issuer, child }
    }

    /// Makes the token endpoint answer 503 (`down = true`) or work again.
    pub async fn set_down(&self, down: bool) {
        let mode = if down { "down" } else { "ok" };
        let resp = reqwest::Client::new()
            .post(format!("{}/__test/fail?mode={mode}", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    /// The provider's request counters.
    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(format!("{}/__test/state", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resolves a `Location` against a base URL.
pub fn resolve(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// Drives the provider's login for `login` from an authorization URL to the redirect back to
/// the client (returned as an absolute URL), the way a browser would.
pub async fn idp_login(authorize_url: &str, login: &str) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .unwrap_or_else(|| panic!("no Location in {} answer", r.status()))
            .to_str()
            .unwrap()
            .to_string()
    };
    let r = browser.get(authorize_url).send().await.unwrap();
    assert!(r.status().is_redirection(), "authorize: {}", r.status());
    let interaction = resolve(authorize_url, &location(&r));
    let r = browser
        .post(format!("{interaction}/login"))
        .form(&[("login", login), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "login: {}", r.status());
    let resume = resolve(&interaction, &location(&r));
    let r = browser.get(&resume).send().await.unwrap();
    assert!(r.status().is_redirection(), "resume: {}", r.status());
    resolve(&resume, &location(&r))
}

/// The Python virtualenv of one warehouse emulator (`.ci/run` creates one per emulator).
pub fn venv(emulator: &str) -> PathBuf {
    std::env::var_os("SLUICE_TEST_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("sluice-venvs")
        })
        .join(emulator)
}

/// A running `snowduck` (Snowflake SQL API v2 emulator, PyPI); killed on drop.
pub struct Snowduck {
    /// Base URL.
    pub url: String,
    child: Child,
}

impl Snowduck {
    /// Starts it on a free port and waits until it answers. Fails (never skips) when it is not
    /// installed: `.ci/run` installs it.
    pub async fn start() -> Snowduck {
        let bin = venv("snowduck").join("bin").join("snowduck");
        assert!(
            bin.exists(),
            "snowduck is not installed at {} (bash .ci/run installs it)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("snowduck starts");
        let s = Snowduck {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let started = Instant::now();
        loop {
            if s.sql("SELECT 1").await.is_ok() {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "snowduck did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a statement directly (test setup).
    pub async fn sql(&self, statement: &str) -> Result<serde_json::Value, String> {
        post_json(
            &format!("{}/api/v2/statements", self.url),
            &serde_json::json!({ "statement": statement }),
        )
        .await
    }
}

impl Drop for Snowduck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs JSON to an emulator (test setup): the answer, or its text for a failure status.
async fn post_json(url: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if ok { Ok(v) } else { Err(v.to_string()) }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `minilake` (Databricks API emulator, PyPI) with a fresh data directory, a SQL
/// warehouse and a Unity Catalog catalog; killed on drop.
pub struct Minilake {
    /// Base URL.
    pub url: String,
    /// The SQL warehouse id to pass.
    pub warehouse_id: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl Minilake {
    /// Starts it on a free port, creates a warehouse and `catalog`, and waits until it answers.
    /// Fails (never skips) when it is not installed: `.ci/run` installs it.
    pub async fn start(catalog: &str) -> Minilake {
        let bin = venv("minilake").join("bin").join("minilake");
        assert!(
            bin.exists(),
            "minilake is not installed at {} (bash .ci/run installs it)",
            bin.display()
        );
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let extensions = data.path().join("no-extensions");
        std::fs::create_dir_all(&extensions).unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("MINILAKE_DATA_DIR", data.path())
            .env("MINILAKE_NOTEBOOK", "0")
            .env("MINILAKE_DUCKDB_EXTENSION_DIR", &extensions)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("minilake starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http
            .get(format!("{url}/_minilake/ready"))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "minilake did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let w: serde_json::Value = http
            .post(format!("{url}/api/2.0/sql/warehouses"))
            .json(&serde_json::json!({"name": "sluice-test", "cluster_size": "2X-Small"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let warehouse_id = w["id"].as_str().expect("a warehouse id").to_string();
        let r = http
            .post(format!("{url}/api/2.1/unity-catalog/catalogs"))
            .json(&serde_json::json!({ "name": catalog }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        Minilake {
            url,
            warehouse_id,
            child,
            _data: data,
        }
    }

    /// Runs a statement directly (test setup).
    pub async fn sql(&self, statement: &str) -> Result<serde_json::Value, String> {
        post_json(
            &format!("{}/api/2.0/sql/statements", self.url),
            &serde_json::json!({
                "warehouse_id": self.warehouse_id, "statement": statement,
                "wait_timeout": "30s", "disposition": "INLINE", "format": "JSON_ARRAY",
            }),
        )
        .await
    }
}

impl Drop for Minilake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `bqemulator` (BigQuery REST API v2 emulator, PyPI), in memory; killed on drop.
pub struct Bqemulator {
    /// Base URL of the REST API.
    pub url: String,
    /// The project it serves.
    pub project: String,
    child: Child,
}

impl Bqemulator {
    /// Starts it on free ports for `project` and waits until it is ready. Fails (never skips)
    /// when it is not installed: `.ci/run` installs it.
    pub async fn start(project: &str) -> Bqemulator {
        let bin = venv("bqemulator").join("bin").join("bqemulator");
        assert!(
            bin.exists(),
            "bqemulator is not installed at {} (bash .ci/run installs it)",
            bin.display()
        );
        let (rest, grpc) = (free_port(), free_port());
        let child = Command::new(bin)
            .args([
                "start",
                "--rest-port",
                &rest.to_string(),
                "--grpc-port",
                &grpc.to_string(),
                "--project",
                project,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bqemulator starts");
        let url = format!("http://127.0.0.1:{rest}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/readyz"))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "bqemulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Bqemulator {
            url,
            project: project.into(),
            child,
        }
    }

    /// Runs a statement directly (test setup); a job error is an `Err`.
    pub async fn sql(&self, statement: &str) -> Result<serde_json::Value, String> {
        let v = post_json(
            &format!("{}/bigquery/v2/projects/{}/queries", self.url, self.project),
            &serde_json::json!({"query": statement, "useLegacySql": false}),
        )
        .await?;
        // The emulator answers a failed job with 200 and `errors`.
        if v.get("errors").is_none() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    }
}

impl Drop for Bqemulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The column names of a `/v1/query` JSON answer.
pub fn column_names(body: &serde_json::Value) -> Vec<&str> {
    body["columns"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

/// A JSON answer's cell as a number (warehouses send decimals as strings); `None` otherwise.
pub fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        other => other.as_f64(),
    }
}
