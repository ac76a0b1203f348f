//! `sluice serve --demo`: a generated multi-tenant data set served by the embedded engine, with
//! a random HS256 secret kept in the data directory so demo tokens can be minted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use parquet::arrow::ArrowWriter;

use crate::config::{
    AccessKind, ApiKeysConfig, AuthConfig, ClaimsConfig, Config, ConnectionConfig, ConnectionKind,
    FileFormatConfig, JwtAlgorithm, JwtConfig, LimitsConfig, LogConfig, ServerConfig, TableConfig,
};

/// The demo's tenants.
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Issuer of demo tokens.
pub const ISSUER: &str = "sluice-demo";
/// Audience of demo tokens.
pub const AUDIENCE: &str = "sluice";
/// File (in the data dir) holding the demo signing secret.
pub const SECRET_FILE: &str = "demo-jwt-secret";
/// Customers per tenant.
const CUSTOMERS_PER_TENANT: i64 = 300;
/// Orders per tenant.
const ORDERS_PER_TENANT: i64 = 3_000;
/// Products (shared by every tenant).
const PRODUCTS: i64 = 40;
/// Lifetime of printed demo tokens.
pub const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Deterministic pseudo-random numbers (xorshift64*), so the demo is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(())
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// Writes the demo tables as Parquet files under `dir` (idempotent: same data every time).
pub fn generate(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = Rng(0x5EED_CAFE_F00D_u64);

    let regions = ["EMEA", "North America", "LATAM", "APAC", "Middle East"];
    write_parquet(
        &dir.join("regions.parquet"),
        &batch(
            vec![
                Field::new("region_id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
            ],
            vec![
                Arc::new(Int64Array::from_iter_values(1..=regions.len() as i64)),
                Arc::new(StringArray::from_iter_values(regions)),
            ],
        )?,
    )?;

    let categories = ["hardware", "software", "services", "training"];
    let products: Vec<i64> = (1..=PRODUCTS).collect();
    let prices: Vec<f64> = products
        .iter()
        .map(|_| (rng.below(50_000) as f64) / 100.0 + 5.0)
        .collect();
    write_parquet(
        &dir.join("products.parquet"),
        &batch(
            vec![
                Field::new("product_id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("category", DataType::Utf8, false),
                Field::new("price", DataType::Float64, false),
            ],
            vec![
                Arc::new(Int64Array::from(products.clone())),
                Arc::new(StringArray::from_iter_values(
                    products.iter().map(|p| format!("product-{p}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    products.iter().map(|p| categories[(*p as usize) % 4]),
                )),
                Arc::new(Float64Array::from(prices.clone())),
            ],
        )?,
    )?;

    let segments = ["enterprise", "mid-market", "smb"];
    let (mut c_tenant, mut c_id, mut c_name, mut c_region, mut c_segment, mut c_since) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let statuses = ["paid", "open", "refunded", "shipped"];
    let (
        mut o_tenant,
        mut o_id,
        mut o_cust,
        mut o_prod,
        mut o_qty,
        mut o_amount,
        mut o_status,
        mut o_at,
    ) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    // 2024-01-01T00:00:00Z in microseconds, and in days.
    let epoch_2024_us: i64 = 1_704_067_200_000_000;
    let epoch_2024_days: i32 = 19_723;
    for tenant in TENANTS {
        for i in 1..=CUSTOMERS_PER_TENANT {
            c_tenant.push(tenant);
            c_id.push(i);
            c_name.push(format!("{tenant}-customer-{i}"));
            c_region.push(1 + rng.below(regions.len() as u64) as i64);
            c_segment.push(segments[rng.below(3) as usize]);
            c_since.push(epoch_2024_days - rng.below(1000) as i32);
        }
        for i in 1..=ORDERS_PER_TENANT {
            let product = 1 + rng.below(PRODUCTS as u64) as i64;
            let qty = 1 + rng.below(10) as i32;
            o_tenant.push(tenant);
            o_id.push(i);
            o_cust.push(1 + rng.below(CUSTOMERS_PER_TENANT as u64) as i64);
            o_prod.push(product);
            o_qty.push(qty);
            let price = prices[(product - 1) as usize];
            o_amount.push((price * f64::from(qty) * 100.0).round() / 100.0);
            o_status.push(statuses[rng.below(4) as usize]);
            o_at.push(epoch_2024_us + (rng.below(365 * 24 * 3600) as i64) * 1_000_000);
        }
    }
    write_parquet(
        &dir.join("customers.parquet"),
        &batch(
            vec![
                Field::new("tenant_id", DataType::Utf8, false),
                Field::new("customer_id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("region_id", DataType::Int64, false),
                Field::new("segment", DataType::Utf8, false),
                Field::new("customer_since", DataType::Date32, false),
            ],
            vec![
                Arc::new(StringArray::from(c_tenant)),
                Arc::new(Int64Array::from(c_id)),
                Arc::new(StringArray::from(c_name)),
                Arc::new(Int64Array::from(c_region)),
                Arc::new(StringArray::from(c_segment)),
                Arc::new(Date32Array::from(c_since)),
            ],
        )?,
    )?;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    write_parquet(
        &dir.join("orders.parquet"),
        &batch(
            vec![
                Field::new("tenant_id", DataType::Utf8, false),
                Field::new("order_id", DataType::Int64, false),
                Field::new("customer_id", DataType::Int64, false),
                Field::new("product_id", DataType::Int64, false),
                Field::new("quantity", DataType::Int32, false),
                Field::new("amount", DataType::Float64, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("ordered_at", ts_type, false),
            ],
            vec![
                Arc::new(StringArray::from(o_tenant)),
                Arc::new(Int64Array::from(o_id)),
                Arc::new(Int64Array::from(o_cust)),
                Arc::new(Int64Array::from(o_prod)),
                Arc::new(Int32Array::from(o_qty)),
                Arc::new(Float64Array::from(o_amount)),
                Arc::new(StringArray::from(o_status)),
                Arc::new(TimestampMicrosecondArray::from(o_at).with_timezone("UTC")),
            ],
        )?,
    )?;
    Ok(())
}

/// Returns the demo secret, creating a random one in `data_dir` on first use.
pub fn secret(data_dir: &Path) -> Result<Vec<u8>, String> {
    let path = data_dir.join(SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    // Written whole under a name of its own, then linked into place: a concurrent first use
    // (two daemons, or two tests in one process) never reads a partial file, and the one that
    // loses the race uses the winner's secret.
    let tmp = data_dir.join(format!("{SECRET_FILE}.{}", hex::encode(&raw[..8])));
    write_private(&tmp, &text)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(text.into_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|t| t.trim().as_bytes().to_vec())
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Mints a demo token for `user` of `tenant`.
pub fn token(
    data_dir: &Path,
    user: &str,
    tenant: &str,
    groups: &[String],
) -> Result<String, String> {
    let secret = secret(data_dir)?;
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = serde_json::json!({
        "sub": user, "tenant": tenant, "groups": groups,
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_TTL_SECS,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .map_err(|e| e.to_string())
}

fn table(name: &str, access: AccessKind, cols: &[&str], path: PathBuf) -> TableConfig {
    TableConfig {
        name: format!("public.{name}"),
        access,
        tenant_column: (access == AccessKind::Protected).then(|| "tenant_id".to_string()),
        columns: cols.iter().map(|c| c.to_string()).collect(),
        groups: None,
        grants: Default::default(),
        masks: Default::default(),
        types: Default::default(),
        row_filters: vec![],
        tags: vec![],
        path: Some(path),
        format: Some(FileFormatConfig::Parquet),
    }
}

/// The demo configuration: generates the data under `data_dir/demo` and declares it.
pub fn config(data_dir: &Path, listen: &str) -> Result<Config, String> {
    let files = data_dir.join("demo");
    generate(&files)?;
    secret(data_dir)?;
    Ok(Config {
        server: ServerConfig {
            listen: listen.to_string(),
            data_dir: data_dir.to_path_buf(),
            ..ServerConfig::default()
        },
        log: LogConfig::default(),
        auth: AuthConfig {
            jwt: Some(JwtConfig {
                algorithm: JwtAlgorithm::HS256,
                secret_env: None,
                secret_file: Some(data_dir.join(SECRET_FILE)),
                public_key_file: None,
                jwks_url: None,
                jwks_ttl_secs: 600,
                jwks_min_refetch_secs: 10,
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                leeway_secs: 30,
                max_age_secs: None,
                require_jti: false,
                claims: ClaimsConfig::default(),
            }),
            oidc: None,
            sessions: Default::default(),
            tickets: Default::default(),
            // The demo is for development: API keys (`sluice apikey create`) work.
            api_keys: ApiKeysConfig { enabled: true },
            rate_limit: Default::default(),
            roles: Default::default(),
            attributes: Default::default(),
        },
        limits: LimitsConfig::default(),
        federation: Default::default(),
        pgwire: Default::default(),
        audit: Default::default(),
        connections: vec![ConnectionConfig {
            id: "demo".into(),
            kind: ConnectionKind::Embedded,
            default_schema: "public".into(),
            default_catalog: None,
            url_env: None,
            statement_timeout_ms: crate::config::DEFAULT_QUERY_TIMEOUT_MS,
            threads: 2,
            credential: Default::default(),
            oauth: None,
            allow_privileged_login: false,
            tenant_fence: Default::default(),
            endpoint: None,
            warehouse: None,
            role: None,
            location: None,
            tables: vec![
                table(
                    "regions",
                    AccessKind::Public,
                    &["region_id", "name"],
                    files.join("regions.parquet"),
                ),
                table(
                    "products",
                    AccessKind::Public,
                    &["product_id", "name", "category", "price"],
                    files.join("products.parquet"),
                ),
                table(
                    "customers",
                    AccessKind::Protected,
                    &[
                        "tenant_id",
                        "customer_id",
                        "name",
                        "region_id",
                        "segment",
                        "customer_since",
                    ],
                    files.join("customers.parquet"),
                ),
                table(
                    "orders",
                    AccessKind::Protected,
                    &[
                        "tenant_id",
                        "order_id",
                        "customer_id",
                        "product_id",
                        "quantity",
                        "amount",
                        "status",
                        "ordered_at",
                    ],
                    files.join("orders.parquet"),
                ),
            ],
        }],
        vault: None,
    })
}

/// The query printed in the demo's curl line.
pub const SAMPLE_SQL: &str = "SELECT c.name, count(*) AS orders, round(sum(o.amount), 2) AS revenue \
FROM orders o JOIN customers c ON o.customer_id = c.customer_id \
GROUP BY c.name ORDER BY revenue DESC LIMIT 5";

/// A ready-to-paste curl command for `token` against `base_url`.
pub fn curl_line(base_url: &str, token: &str) -> String {
    let body = serde_json::json!({ "sql": SAMPLE_SQL }).to_string();
    format!(
        "curl -s {base_url}/v1/query -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{body}'"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn concurrent_first_uses_share_one_whole_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| super::secret(dir.path()).unwrap()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(secrets[0].len(), 43);
            assert!(secrets.iter().all(|s| *s == secrets[0]), "{secrets:?}");
            // Only the secret is left behind.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }
}
