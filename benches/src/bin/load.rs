//! The load harness: sluice against going direct and against PgBouncer, in one run, on the
//! local PostgreSQL; then streaming a large answer through sluice; then a federated join
//! against the same join done by DataFusion on local data.
//!
//! ```sh
//! cargo build --release -p sluice -p sluice-benches --bins
//! target/release/load --sluice target/release/sluice [--seconds 5] [--stream-rows 10000000]
//! ```
//!
//! It creates the database `sluice_bench` (dropped and re-created), installs PgBouncer from the
//! Debian archive if it is missing, and starts PgBouncer and the daemon itself. Every load is
//! closed-loop: `c` workers each send a query, wait for the whole answer, and send the next,
//! for `--seconds`; latencies are per query, throughput is queries per second.
//!
//! - direct: `c` tokio-postgres connections (one per worker), the query with the tenant filter
//!   written in it, in one round trip (`query_typed`: unnamed statement);
//! - PgBouncer 1.18 (transaction pooling, 32 server connections) with the same client code;
//! - sluice over HTTP/1.1 keep-alive (`c` connections), an HS256 JWT, the query without the
//!   tenant filter (the policy adds it), JSON for the point query, Arrow for 10,000 rows;
//! - `--only wire`: pgbench (`-M prepared` and `-M extended`, a custom point-query script)
//!   straight to PostgreSQL, through PgBouncer and through sluice's PostgreSQL-wire door
//!   (password = the JWT); p50 / p99 from pgbench's per-transaction log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

const DB: &str = "sluice_bench";
const PG: &str = "host=127.0.0.1 port=5432 user=postgres";
/// The daemon's service login (created by `.ci/run`, or here if missing): SELECT only.
const READER: &str = "sluice_reader";
const SECRET: &str = "load-harness-secret-0123456789abcdef0123";
/// Rows of tenant A in `points` (tenant B has as many).
const POINTS: i64 = 200_000;
/// Rows of the federation bench: the PostgreSQL side and the embedded side.
const FED_BIG: i64 = 1_000_000;
const FED_SMALL: i64 = 100_000;

struct Args {
    sluice: PathBuf,
    seconds: f64,
    stream_rows: i64,
    concurrency: Vec<usize>,
    only: Option<String>,
}

/// `--targets`: run only these targets (`direct,rewritten,bouncer,sluice,literal`), for
/// profiling one of them; the others' cells stay empty.
static TARGETS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `--durability`: the daemon's `audit.durability` (default `before_answer`).
static DURABILITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn args() -> Args {
    let mut a = Args {
        sluice: PathBuf::from("target/release/sluice"),
        seconds: 5.0,
        stream_rows: 10_000_000,
        concurrency: vec![1, 8, 32, 128],
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--sluice" => a.sluice = PathBuf::from(v),
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--stream-rows" => a.stream_rows = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.split(',').map(|c| c.parse().unwrap()).collect(),
            "--only" => a.only = Some(v),
            "--targets" => {
                let _ = TARGETS.set(v.split(',').map(str::to_string).collect());
            }
            "--durability" => {
                let _ = DURABILITY.set(v);
            }
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn sh(cmd: &str, args: &[&str]) {
    let s = Command::new(cmd).args(args).status().unwrap();
    assert!(s.success(), "{cmd} {args:?} failed");
}

fn psql(db: &str, sql: &str) {
    sh(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Loads the tables (idempotent by re-creation).
fn load_data(stream_rows: i64) {
    let t = Instant::now();
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    );
    psql("postgres", &format!("CREATE DATABASE {DB}"));
    psql(
        DB,
        &format!(
            "CREATE TABLE points (id int8, tenant_id text, v float8, label text,
                                 PRIMARY KEY (tenant_id, id));
             INSERT INTO points SELECT g, t, g * 0.5, 'label-' || g
               FROM generate_series(1, {POINTS}) g, (VALUES ('A'), ('B')) x(t);
             CREATE UNLOGGED TABLE big (id int8, tenant_id text, v float8);
             INSERT INTO big SELECT g, 'A', g * 0.25 FROM generate_series(1, {stream_rows}) g;
             CREATE UNLOGGED TABLE fed_big (k int8, tenant_id text, v float8);
             INSERT INTO fed_big SELECT g % {FED_SMALL}, 'A', g * 0.5
               FROM generate_series(1, {FED_BIG}) g;"
        ),
    );
    // sluice's service login: least privilege (sluice refuses a superuser), SELECT only.
    psql(
        DB,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
                 CREATE ROLE {READER} LOGIN NOSUPERUSER NOBYPASSRLS;
               END IF;
             END $$;
             GRANT USAGE ON SCHEMA public TO {READER};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};"
        ),
    );
    psql(DB, "VACUUM ANALYZE");
    eprintln!("data loaded in {:.1} s", t.elapsed().as_secs_f64());
}

/// PgBouncer in transaction pooling mode in front of the bench database.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer() -> Bouncer {
    if Command::new("pgbouncer").arg("--version").output().is_err() {
        sh("apt-get", &["install", "-y", "-qq", "pgbouncer"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{DB} = host=127.0.0.1 port=5432 dbname={DB} user=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = any\n\
             pool_mode = transaction\ndefault_pool_size = 32\nmax_client_conn = 1000\n\
             unix_socket_dir =\nlogfile = {}\n",
            dir.path().join("pgbouncer.log").display()
        ),
    )
    .unwrap();
    // PgBouncer refuses to run as root: it switches to the postgres user.
    sh("chmod", &["-R", "a+rwx", dir.path().to_str().unwrap()]);
    let mut cmd = Command::new("pgbouncer");
    if running_as_root() {
        cmd.args(["-u", "postgres"]);
    }
    let child = cmd
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Bouncer {
        child,
        port,
        _dir: dir,
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The daemon, started from the release binary with a config of its own.
struct Daemon {
    child: Child,
    url: String,
    /// The PostgreSQL-wire door's `host:port`.
    wire: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(bin: &Path, extra_connections: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"
request_timeout_ms = 600000

[log]
level = "warn"
{durability}

[auth.jwt]
algorithm = "HS256"
secret_env = "SLUICE_BENCH_JWT"
issuer = "load-harness"
audience = "sluice"

[limits]
max_result_rows = 100000000
query_timeout_ms = 1200000

[federation]
max_source_rows = 10000000

[pgwire]
listen = "127.0.0.1:0"

[[connections]]
id = "pg"
kind = "postgres"
url_env = "SLUICE_BENCH_PG"

[[connections.tables]]
name = "public.points"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "v", "label"]

[[connections.tables]]
name = "public.big"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "v"]

[[connections.tables]]
name = "public.fed_big"
access = "protected"
tenant_column = "tenant_id"
columns = ["k", "tenant_id", "v"]
{extra_connections}
"#,
                data = dir.path().join("data").display(),
                // Only when asked: a daemon older than the setting refuses unknown keys.
                durability = DURABILITY
                    .get()
                    .map(|d| format!("\n[audit]\ndurability = \"{d}\"\n"))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("SLUICE_BENCH_JWT", SECRET)
            .env(
                "SLUICE_BENCH_PG",
                format!("postgres://{READER}@127.0.0.1:5432/{DB}"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the daemon prints its address")
                .unwrap();
            if let Some(rest) = line.strip_prefix("sluice listening on ") {
                break rest.trim().to_string();
            }
        };
        let wire = loop {
            let line = lines
                .next()
                .expect("the daemon prints its wire address")
                .unwrap();
            if let Some(rest) = line.strip_prefix("sluice PostgreSQL wire protocol on ") {
                break rest.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            url,
            wire,
            _dir: dir,
        }
    }

    /// Peak and current resident memory (VmHWM, VmRSS) in kB.
    fn memory(&self) -> (u64, u64) {
        memory_of(&format!("/proc/{}/status", self.child.id()))
    }
}

fn memory_of(status: &str) -> (u64, u64) {
    let s = std::fs::read_to_string(status).unwrap();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmHWM:"), get("VmRSS:"))
}

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "bench", "tenant": "A", "groups": ["analyst"], "exp": exp,
                            "iss": "load-harness", "aud": "sluice"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    /// Direct, with the SQL sluice sends (the policy's fenced derived table): separates what
    /// the proxy costs from what the rewritten SQL costs the database.
    DirectRewritten,
    Bouncer,
    /// sluice, the caller's value as a parameter (`$1`): one text, cached rewrite and statement.
    Sluice,
    /// sluice, the value written into the SQL: a new text every query (cache misses).
    SluiceLiteral,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    Point,
    Rows10k,
}

#[derive(Default)]
struct Stats {
    qps: f64,
    p50_us: f64,
    p99_us: f64,
    n: usize,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i])
}

/// The SQL each target runs for a shape, and the id range it draws from.
fn pg_sql(target: Target, shape: Shape) -> &'static str {
    const FENCED: &str = "FROM (SELECT \"id\", \"tenant_id\", \"v\", \"label\" FROM \"public\".\"points\" \
                          WHERE \"tenant_id\" = 'A' OFFSET 0) AS points";
    if target == Target::DirectRewritten {
        return match shape {
            Shape::Point => const_format(FENCED, "WHERE id = $1"),
            Shape::Rows10k => const_format(FENCED, "WHERE id BETWEEN $1 AND $1 + 9999"),
        };
    }
    match shape {
        Shape::Point => {
            "SELECT id, tenant_id, v, label FROM points WHERE tenant_id = 'A' AND id = $1"
        }
        Shape::Rows10k => {
            "SELECT id, tenant_id, v, label FROM points WHERE tenant_id = 'A' AND id BETWEEN $1 AND $1 + 9999"
        }
    }
}

/// `SELECT id, tenant_id, v, label <from> <where>`, built once and kept for the run.
fn const_format(from: &str, filter: &str) -> &'static str {
    Box::leak(format!("SELECT id, tenant_id, v, label {from} {filter}").into_boxed_str())
}

/// The body sluice gets: the SQL and, for [`Target::Sluice`], the parameter.
fn sluice_body(target: Target, shape: Shape, id: i64) -> serde_json::Value {
    if target == Target::SluiceLiteral {
        return serde_json::json!({"sql": sluice_sql(shape, id)});
    }
    match shape {
        Shape::Point => serde_json::json!({
            "sql": "SELECT id, tenant_id, v, label FROM points WHERE id = $1",
            "params": [id],
        }),
        Shape::Rows10k => serde_json::json!({
            "sql": "SELECT id, tenant_id, v, label FROM points WHERE id BETWEEN $1 AND $2",
            "params": [id, id + 9999],
        }),
    }
}

fn sluice_sql(shape: Shape, id: i64) -> String {
    match shape {
        Shape::Point => format!("SELECT id, tenant_id, v, label FROM points WHERE id = {id}"),
        Shape::Rows10k => format!(
            "SELECT id, tenant_id, v, label FROM points WHERE id BETWEEN {id} AND {}",
            id + 9999
        ),
    }
}

async fn run_load(
    target: Target,
    shape: Shape,
    c: usize,
    seconds: f64,
    bouncer_port: u16,
    sluice_url: &str,
    token: &str,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();
    // The PostgreSQL client pool: one connection per worker up to 32 (as PgBouncer and sluice
    // use at most; the server allows 100 in all),
    // shared by pipelining beyond that.
    let conn_str = match target {
        Target::Direct | Target::DirectRewritten => format!("{PG} dbname={DB}"),
        Target::Bouncer => format!("host=127.0.0.1 port={bouncer_port} user=postgres dbname={DB}"),
        Target::Sluice | Target::SluiceLiteral => String::new(),
    };
    let mut clients = vec![];
    if !matches!(target, Target::Sluice | Target::SluiceLiteral) {
        for _ in 0..c.min(32) {
            let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            clients.push(Arc::new(client));
        }
    }
    let mut workers = vec![];
    for w in 0..c {
        let http = http.clone();
        let url = format!("{sluice_url}/v1/query");
        let token = token.to_string();
        let sql = pg_sql(target, shape);
        let client = (!clients.is_empty()).then(|| Arc::clone(&clients[w % clients.len()]));
        workers.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let mut i: i64 = w as i64 * 7919;
            while Instant::now() < deadline {
                i = (i + 104_729) % (POINTS - 10_000) + 1;
                let t = Instant::now();
                match &client {
                    Some(cl) => {
                        let rows = cl
                            .query_typed(sql, &[(&i, tokio_postgres::types::Type::INT8)])
                            .await
                            .unwrap();
                        let expected = if shape == Shape::Point { 1 } else { 10_000 };
                        assert_eq!(rows.len(), expected);
                    }
                    None => {
                        let accept = match shape {
                            Shape::Point => "application/json",
                            Shape::Rows10k => "application/vnd.apache.arrow.stream",
                        };
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("accept", accept)
                            .json(&sluice_body(target, shape, i))
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success(), "{}", r.status());
                        let body = r.bytes().await.unwrap();
                        assert!(!body.is_empty());
                    }
                }
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = vec![];
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    all.sort_unstable();
    Stats {
        qps: all.len() as f64 / elapsed,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        n: all.len(),
    }
}

async fn load_section(a: &Args) {
    let bouncer = pgbouncer();
    let daemon = Daemon::start(&a.sluice, "");
    let token = token();
    println!("\n### Load (closed loop, {} s per cell)\n", a.seconds);
    println!(
        "| query | c | direct qps | direct p50 / p99 µs | direct, sluice's SQL: qps | p50 / p99 µs | PgBouncer qps | PgBouncer p50 / p99 µs | sluice qps | sluice p50 / p99 µs | sluice, literal SQL: qps | p50 / p99 µs | sluice/direct qps | sluice/PgBouncer qps | sluice − direct p50 µs | literal: sluice/direct qps | literal: sluice − direct p50 µs |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for shape in [Shape::Point, Shape::Rows10k] {
        for &c in &a.concurrency {
            // A short warm-up per target (connections, caches).
            let mut s = vec![];
            for target in [
                Target::Direct,
                Target::DirectRewritten,
                Target::Bouncer,
                Target::Sluice,
                Target::SluiceLiteral,
            ] {
                let name = match target {
                    Target::Direct => "direct",
                    Target::DirectRewritten => "rewritten",
                    Target::Bouncer => "bouncer",
                    Target::Sluice => "sluice",
                    Target::SluiceLiteral => "literal",
                };
                if TARGETS.get().is_some_and(|t| !t.iter().any(|x| x == name)) {
                    s.push(Stats::default());
                    continue;
                }
                let _ = run_load(target, shape, c, 0.5, bouncer.port, &daemon.url, &token).await;
                s.push(
                    run_load(
                        target,
                        shape,
                        c,
                        a.seconds,
                        bouncer.port,
                        &daemon.url,
                        &token,
                    )
                    .await,
                );
            }
            let (d, r, b, x, l) = (&s[0], &s[1], &s[2], &s[3], &s[4]);
            println!(
                "| {} | {c} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.2} | {:.2} | {:+.0} | {:.2} | {:+.0} |",
                match shape {
                    Shape::Point => "point",
                    Shape::Rows10k => "10k rows",
                },
                d.qps,
                d.p50_us,
                d.p99_us,
                r.qps,
                r.p50_us,
                r.p99_us,
                b.qps,
                b.p50_us,
                b.p99_us,
                x.qps,
                x.p50_us,
                x.p99_us,
                l.qps,
                l.p50_us,
                l.p99_us,
                x.qps / d.qps,
                x.qps / b.qps,
                x.p50_us - d.p50_us,
                l.qps / d.qps,
                l.p50_us - d.p50_us,
            );
            eprintln!(
                "  ({shape:?} c={c}: {} / {} / {} / {} / {} queries)",
                d.n, r.n, b.n, x.n, l.n
            );
        }
    }
}

async fn stream_section(a: &Args) {
    println!("\n### Streaming {} rows through sluice\n", a.stream_rows);
    println!(
        "| format | rows | bytes | seconds | rows/s | daemon VmHWM before → after (MB) | growth MB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let token = token();
    for (name, accept) in [
        ("JSON", "application/json"),
        ("Arrow", "application/vnd.apache.arrow.stream"),
    ] {
        // A fresh daemon per format: its peak RSS is this answer's.
        let daemon = Daemon::start(&a.sluice, "");
        let http = reqwest::Client::new();
        // Warm: the pool, the policy, the allocator.
        let _ = http
            .post(format!("{}/v1/query", daemon.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({"sql": "SELECT id FROM big WHERE id < 1000"}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (hwm0, _) = daemon.memory();
        let t = Instant::now();
        let r = http
            .post(format!("{}/v1/query", daemon.url))
            .bearer_auth(&token)
            .header("accept", accept)
            .json(&serde_json::json!({"sql": "SELECT id, tenant_id, v FROM big"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let mut bytes: u64 = 0;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            bytes += chunk.unwrap().len() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        let (hwm1, _) = daemon.memory();
        println!(
            "| {name} | {} | {:.0} MB | {secs:.2} | {:.2} M | {:.1} → {:.1} | {:+.1} |",
            a.stream_rows,
            bytes as f64 / 1e6,
            a.stream_rows as f64 / secs / 1e6,
            hwm0 as f64 / 1024.0,
            hwm1 as f64 / 1024.0,
            (hwm1 as f64 - hwm0 as f64) / 1024.0
        );
    }
}

/// The embedded side of the federation bench: `FED_SMALL` rows (k, tenant_id, w).
fn small_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("w", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..FED_SMALL)),
            Arc::new(StringArray::from_iter_values((0..FED_SMALL).map(|_| "A"))),
            Arc::new(Float64Array::from_iter_values(
                (0..FED_SMALL).map(|i| i as f64 * 2.0),
            )),
        ],
    )
    .unwrap()
}

/// The PostgreSQL side, as the same values (`fed_big`: k = g % FED_SMALL, v = g * 0.5).
fn big_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("v", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(
                (1..=FED_BIG).map(|g| g % FED_SMALL),
            )),
            Arc::new(StringArray::from_iter_values((1..=FED_BIG).map(|_| "A"))),
            Arc::new(Float64Array::from_iter_values(
                (1..=FED_BIG).map(|g| g as f64 * 0.5),
            )),
        ],
    )
    .unwrap()
}

const FED_SQL: &str = "SELECT count(*) AS n, sum(a.v * b.w) AS s \
                       FROM pg.public.fed_big a JOIN emb.public.small b ON a.k = b.k";

async fn federation_section(a: &Args) {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.parquet");
    {
        let batch = small_batch();
        let file = std::fs::File::create(&small).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let extra = format!(
        r#"
[[connections]]
id = "emb"
kind = "embedded"
[[connections.tables]]
name = "public.small"
access = "protected"
tenant_column = "tenant_id"
columns = ["k", "tenant_id", "w"]
path = "{}"
format = "parquet"
"#,
        small.display()
    );
    let token = token();
    println!(
        "\n### Federated join: {FED_BIG} rows (PostgreSQL) ⋈ {FED_SMALL} rows (embedded Parquet)\n"
    );
    println!("| run | seconds (best of 3) | peak memory growth MB | answer |");
    println!("| --- | --- | --- | --- |");
    let daemon = Daemon::start(&a.sluice, &extra);
    let http = reqwest::Client::new();
    let (hwm0, _) = daemon.memory();
    let mut best = f64::MAX;
    let mut answer = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = http
            .post(format!("{}/v1/query", daemon.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "sql": FED_SQL }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let v: serde_json::Value = r.json().await.unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        answer = v["rows"].to_string();
    }
    let (hwm1, _) = daemon.memory();
    let fed_mb = (hwm1 as f64 - hwm0 as f64) / 1024.0;
    println!("| sluice federated (HTTP, JSON) | {best:.3} | {fed_mb:+.1} | {answer} |");
    drop(daemon);

    // The same join with the data already in DataFusion's memory.
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(2),
    );
    let mem = |b: RecordBatch| {
        Arc::new(datafusion::datasource::MemTable::try_new(b.schema(), vec![vec![b]]).unwrap())
    };
    ctx.register_table("fed_big", mem(big_batch())).unwrap();
    ctx.register_table("small", mem(small_batch())).unwrap();
    let (l0, _) = memory_of("/proc/self/status");
    let mut best_local = f64::MAX;
    let mut local_answer = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let batches = ctx
            .sql("SELECT count(*) AS n, sum(a.v * b.w) AS s FROM fed_big a JOIN small b ON a.k = b.k")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        best_local = best_local.min(t.elapsed().as_secs_f64());
        local_answer = format!("{:?}", batches[0].column(0));
    }
    let (l1, _) = memory_of("/proc/self/status");
    let local_mb = (l1 as f64 - l0 as f64) / 1024.0;
    println!(
        "| DataFusion, data already local | {best_local:.3} | {local_mb:+.1} | n = {} |",
        local_answer.split_whitespace().collect::<String>()
    );
    println!("\nRatio federated / local: {:.1}× time.", best / best_local);
}

/// One pgbench run: tps (without connection time) and p50 / p99 latency (µs) from its
/// per-transaction log.
/// Where pgbench connects, and as whom.
struct PgTarget<'a> {
    port: &'a str,
    user: &'a str,
    password: &'a str,
    db: &'a str,
}

fn pgbench(t: &PgTarget<'_>, script: &str, mode: &str, c: usize, seconds: f64) -> Stats {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("point.sql");
    std::fs::write(&file, script).unwrap();
    let prefix = dir.path().join("log");
    let threads = c.clamp(1, 2).to_string();
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            t.port,
            "-U",
            t.user,
            "-M",
            mode,
        ])
        .args(["-c", &c.to_string(), "-j", &threads])
        .args([
            "-T",
            &format!("{}", seconds.ceil() as u64),
            "-l",
            "--log-prefix",
        ])
        .arg(&prefix)
        .arg("-f")
        .arg(&file)
        .arg(t.db)
        .env("PGPASSWORD", t.password)
        .output()
        .expect("pgbench (postgresql-client) is required");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut lat: Vec<u32> = vec![];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("log"))
        {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                // client_id transaction_no time script_no time_epoch time_us
                if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse().ok()) {
                    lat.push(us);
                }
            }
        }
    }
    lat.sort_unstable();
    Stats {
        qps: tps,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        n: lat.len(),
    }
}

/// The point query by pgbench (`-M prepared` and `-M extended`), straight to PostgreSQL,
/// through PgBouncer and through sluice's PostgreSQL-wire door, in one run.
async fn wire_section(a: &Args) {
    let bouncer = pgbouncer();
    let daemon = Daemon::start(&a.sluice, "");
    let token = token();
    let wire_port = daemon.wire.rsplit(':').next().unwrap().to_string();
    let bouncer_port = bouncer.port.to_string();
    let direct = format!(
        "\\set id random(1, {})\nSELECT id, tenant_id, v, label FROM points WHERE tenant_id = 'A' AND id = :id;\n",
        POINTS
    );
    let through = format!(
        "\\set id random(1, {})\nSELECT id, tenant_id, v, label FROM points WHERE id = :id;\n",
        POINTS
    );
    println!(
        "\n### pgbench point query: direct, PgBouncer, sluice's wire door ({} s per cell)\n",
        a.seconds
    );
    println!(
        "| mode | c | direct tps | direct p50 / p99 µs | PgBouncer tps | p50 / p99 µs | sluice wire tps | p50 / p99 µs | sluice/direct | sluice/PgBouncer | sluice − direct p50 µs |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for mode in ["prepared", "extended"] {
        for &c in &a.concurrency {
            let pg = |port, user, password, db| PgTarget {
                port,
                user,
                password,
                db,
            };
            let d = pgbench(&pg("5432", "postgres", "", DB), &direct, mode, c, a.seconds);
            // PgBouncer 1.18 in transaction pooling keeps no protocol-level prepared
            // statement across server connections: `-M prepared` fails there beyond c = 1.
            let b = if mode == "prepared" && c > 1 {
                Stats::default()
            } else {
                let t = pg(&bouncer_port, "postgres", "", DB);
                pgbench(&t, &direct, mode, c, a.seconds)
            };
            // Warm: the daemon's pool, caches.
            let sluice = pg(&wire_port, "bench", &token, "pg");
            let _ = pgbench(&sluice, &through, mode, c, 1.0);
            let w = pgbench(&sluice, &through, mode, c, a.seconds);
            println!(
                "| {mode} | {c} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.2} | {:.2} | {:+.0} |",
                d.qps,
                d.p50_us,
                d.p99_us,
                b.qps,
                b.p50_us,
                b.p99_us,
                w.qps,
                w.p50_us,
                w.p99_us,
                w.qps / d.qps,
                w.qps / b.qps,
                w.p50_us - d.p50_us
            );
            eprintln!(
                "  (pgbench {mode} c={c}: {} / {} / {} transactions)",
                d.n, b.n, w.n
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    assert!(
        a.sluice.exists(),
        "{} not found: cargo build --release -p sluice",
        a.sluice.display()
    );
    load_data(a.stream_rows);
    let run = |s: &str| a.only.as_deref().is_none_or(|o| o == s);
    if run("load") {
        load_section(&a).await;
    }
    if run("stream") {
        stream_section(&a).await;
    }
    if run("federation") {
        federation_section(&a).await;
    }
    if run("wire") {
        wire_section(&a).await;
    }
}
