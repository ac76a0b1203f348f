//! The query engine: the life of one query, protocol-free, behind every front door.
//!
//! A front door authenticates the caller ([`crate::auth`]), then hands the engine a
//! [`Principal`] and a [`Query`] (SQL, caller parameters, connection, mode). The steps, in this
//! order for both modes (run and explain):
//!
//! 1. the caller's role may query at all;
//! 2. routing ([`route`]): one connection, or the federated workspace;
//! 3. the policy (parse, refuse, rewrite, verify) in the connection's dialect, caller
//!    parameters bound ([`params`]);
//! 4. the credential each warehouse is reached with ([`connection::RunAs`]);
//! 5. the attempt record: queued, and durable before any byte of the answer leaves (fail
//!    closed: no record, no answer, and the warehouse query is cancelled). With
//!    `audit.durability = before_warehouse`, and always for explain and federated queries, it
//!    is durable before any warehouse or source sees anything, schema probes included;
//! 6. run: execute and wait for the first batch, so early failures are plain errors; the
//!    [`Answer`] streams the rest and writes the completion record (group-committed, not
//!    awaited, unless `before_warehouse`). Explain: the explain document (federated: after
//!    planning, which probes each source's schema) and a completion record with outcome
//!    `explained`.
//!
//! Every way out writes exactly one `query_denied` record, or an attempt and a completion.

pub mod answer;
mod audit;
mod cancel;
pub mod catalog;
pub mod connection;
pub mod explain;
pub mod federation;
mod filters;
pub mod params;
pub mod policy;
pub mod route;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice_audit::AuditLog;
use sluice_connectors::{ConnectorError, QueryRequest};
use tokio::sync::watch;
use tokio::time::timeout_at;

use crate::auth::principal::{ClientInfo, Principal};
use crate::config::{Config, Durability};
use crate::error::{Error, Kind};
use crate::vault::Vault;
pub use answer::Answer;
use audit::QueryAudit;
use cancel::unless_cancelled;
use connection::{RunAs, warehouse_error};
pub use params::ParamValue;
use policy::Policy;
use route::{Connections, Route, SourceRef};

/// The `connection` recorded for federated queries (each sub-query names its own).
pub const FEDERATED: &str = "federated";

/// What to do with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run it and stream the answer.
    Run,
    /// Say what the policy would send, without reading rows.
    Explain,
    /// Plan the rewritten query at the warehouse without running it: its parameters' types
    /// and its answer's schema (the wire door's Describe of a statement). Audited like a run
    /// (attempt durable before the warehouse sees it; completion outcome `described`).
    Describe,
}

/// A query as a caller sent it.
#[derive(Debug, Clone)]
pub struct Query {
    /// The SQL text.
    pub sql: String,
    /// Positional caller parameters (`$1`, `$2`... in PostgreSQL).
    pub params: Vec<ParamValue>,
    /// Target connection id; optional when exactly one is declared, or for `<connection>.`
    /// qualified (possibly federated) queries.
    pub connection: Option<String>,
    /// Run or explain.
    pub mode: Mode,
}

/// What the front door knows about the request besides the query.
pub struct Context {
    /// The request id (audit records, logs, warehouse query tags).
    pub request_id: String,
    /// Who is on the other end.
    pub client: ClientInfo,
    /// Becomes `true` when the caller goes away: waiting stops, and dropping the query cancels
    /// it at the warehouse.
    pub cancel: Option<watch::Receiver<bool>>,
    /// How long the front door lets the answer take to start (the rest of the answer is bound
    /// by `[limits] query_timeout_ms`).
    pub start_within: Duration,
}

/// The result of a query.
pub enum Outcome {
    /// Rows (boxed: the answer carries its stream and audit record).
    Rows(Box<Answer>),
    /// The explain document (`decision` is `allow` or `reject`).
    Explained(Value),
    /// What the warehouse says the query takes and returns (`None`: it cannot say without
    /// running it).
    Described(Option<sluice_connectors::Described>),
}

/// The engine: connections, the policy in force, the vault, the audit log.
pub struct Engine {
    config: Arc<Config>,
    connections: Connections,
    policy: RwLock<Arc<Policy>>,
    vault: Option<Arc<Vault>>,
    audit: AuditLog,
}

impl Engine {
    /// An engine over built connections.
    pub fn new(
        config: Arc<Config>,
        connections: Connections,
        policy: Policy,
        vault: Option<Arc<Vault>>,
        audit: AuditLog,
    ) -> Engine {
        Engine {
            config,
            connections,
            policy: RwLock::new(Arc::new(policy)),
            vault,
            audit,
        }
    }

    /// The declared connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The policy snapshot in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new policy; queries already running keep the snapshot they started with.
    pub fn set_policy(&self, policy: Policy) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
    }

    /// Starts a request: from now on every way out is audited.
    pub fn begin(&self, ctx: Context) -> Request<'_> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.config.limits.query_timeout_ms);
        Request {
            engine: self,
            audit: QueryAudit::new(
                &self.audit,
                &ctx.request_id,
                &ctx.client,
                self.config.audit.durability == Durability::BeforeWarehouse,
            ),
            start_by: deadline.min(started + ctx.start_within),
            deadline,
            ctx,
            principal: None,
        }
    }
}

/// One request to the engine, audited from its start.
pub struct Request<'e> {
    engine: &'e Engine,
    audit: QueryAudit,
    ctx: Context,
    principal: Option<Arc<Principal>>,
    /// When the answer must have started.
    start_by: Instant,
    /// When the whole answer must have ended.
    deadline: Instant,
}

impl Request<'_> {
    /// When the answer must have started (a front door bounds reading the request by it too).
    pub fn start_by(&self) -> Instant {
        self.start_by
    }

    /// Authentication failed: records the denial (with the method the credential tried) and
    /// returns the error.
    pub async fn auth_failed(mut self, method_tried: &str, e: Error) -> Error {
        self.audit.record.auth_method = Some(method_tried.into());
        self.refuse(e).await
    }

    /// The caller is authenticated: recorded, and refused unless their role may query.
    pub fn authenticated(&mut self, principal: Principal) -> Result<(), Error> {
        self.audit.principal(&principal);
        let may = self.engine.config.auth.roles.may_query(&principal.groups);
        self.principal = Some(Arc::new(principal));
        if may { Ok(()) } else { Err(forbidden_role()) }
    }

    /// Refuses the request (a bad body, a refused role): records the denial, returns the error.
    pub async fn refuse(self, e: Error) -> Error {
        self.audit.failed(&e).await;
        e
    }

    /// Refuses a query whose SQL was read but which cannot run as sent (its parameters):
    /// records the SQL with the denial.
    pub async fn refuse_query(mut self, sql: &str, connection: Option<&str>, e: Error) -> Error {
        self.record_sql(sql, connection);
        self.refuse(e).await
    }

    /// Records the caller's SQL, literals redacted when `audit.redact_literals` says so (in
    /// the named connection's dialect; PostgreSQL's, which federated SQL is written in,
    /// until a route is known).
    fn record_sql(&mut self, sql: &str, connection: Option<&str>) {
        let engine = self.engine;
        self.audit.record.sql = Some(if engine.config.audit.redact_literals {
            let dialect = connection
                .and_then(|id| engine.policy().catalogs.get(id).map(|c| c.dialect()))
                .unwrap_or(sluice_policy::Dialect::Postgres);
            sluice_policy::redact_literals(sql, dialect)
        } else {
            sql.to_string()
        });
    }

    /// Runs (or explains) the query. Every error has been audited when this returns.
    pub async fn run(mut self, query: Query) -> Result<Outcome, Error> {
        match self.steps(&query).await {
            Ok(outcome) => Ok(outcome),
            // Explain answers a refusal of the query with a document, as `sluice policy
            // explain` does; it is audited like any refusal.
            Err(e) if query.mode == Mode::Explain && explains(&e) => {
                let doc = reject(&e);
                self.audit.failed(&e).await;
                Ok(Outcome::Explained(doc))
            }
            Err(e) => {
                let e = self.audit.settle(e).await;
                Err(self.refuse(e).await)
            }
        }
    }

    async fn steps(&mut self, query: &Query) -> Result<Outcome, Error> {
        let principal = Arc::clone(self.principal.as_ref().ok_or_else(Error::internal)?);
        self.record_sql(&query.sql, query.connection.as_deref());
        let engine = self.engine;
        // The policy snapshot in force now decides the whole query.
        let policy = engine.policy();
        let (conn, sql) = match query.connection.as_deref() {
            None if engine.connections.len() > 1 => {
                match route::route(&engine.connections, &policy, &query.sql)? {
                    Route::Single { conn, sql } => (conn, sql),
                    Route::Federated(sources) => {
                        return self.federated(query, &principal, policy, sources).await;
                    }
                }
            }
            id => (
                Arc::clone(route::named(&engine.connections, id)?),
                query.sql.clone(),
            ),
        };
        self.audit.record.connection = Some(conn.id.clone());

        // The policy: parse, refuse, rewrite, verify; caller parameters bound.
        let (catalog, caller) = policy
            .for_caller(&conn.id, &principal)
            .ok_or_else(Error::internal)?;
        self.audit.record.policy_version = Some(policy.version.clone());
        let redact = engine
            .config
            .audit
            .redact_literals
            .then_some(catalog.dialect());
        if let Some(d) = redact {
            self.audit.record.sql = Some(sluice_policy::redact_literals(&query.sql, d));
        }
        let bound = params::rewrite(
            &policy.cache,
            &conn.id,
            &sql,
            catalog,
            &caller,
            &query.params,
        )?;
        let rewritten = &bound.rewritten;
        self.audit.rewritten(rewritten, redact);
        // The caller's values, then the tenant's, as bound (caller values are literals of
        // the query: redacted with them).
        let shown: Vec<String> = query.params.iter().map(params::shown).collect();
        self.audit.record.params = match redact {
            Some(_) => vec!["?".to_string(); shown.len()],
            None => shown.clone(),
        }
        .into_iter()
        .chain(filters::policy_params(rewritten, redact.is_some()))
        .collect();

        if query.mode == Mode::Explain {
            // No warehouse is contacted: the attempt, then the document.
            self.attempt().await?;
            let mut doc = explain::allowed(rewritten);
            doc["connection"] = json!(conn.id);
            if !shown.is_empty() {
                doc["caller_params"] =
                    json!(query.params.iter().map(param_json).collect::<Vec<_>>());
            }
            return Ok(self.explained(doc).await);
        }

        // The caller's own warehouse credential, then the attempt record, then the warehouse.
        let vault = engine.vault.as_deref();
        let mut run_as = RunAs::choose(vault, &engine.audit, &conn, &principal).await?;
        if query.mode == Mode::Describe {
            // The attempt is durable before the warehouse plans anything.
            self.attempt().await?;
            let describe = conn.connector.describe(QueryRequest {
                sql: &rewritten.sql,
                params: &bound.params,
                request_id: &self.ctx.request_id,
                credential: run_as.credential()?,
            });
            let describe = async {
                timeout_at(self.start_by.into(), describe)
                    .await
                    .map_err(|_| Error::timeout())
            };
            let described = match unless_cancelled(self.ctx.cancel.as_mut(), describe).await? {
                Ok(d) => d.map(|mut d| {
                    // The caller's parameters only (the tenant's follow them).
                    d.param_oids.truncate(query.params.len());
                    d
                }),
                Err(ConnectorError::Unauthorized(_)) if run_as.refreshable() => {
                    return Err(crate::vault::reauth_required(&conn.id));
                }
                Err(e) => return Err(warehouse_error(&e)),
            };
            let mut completion = self.audit.completion();
            completion.finish("described", None).await;
            return Ok(Outcome::Described(described));
        }
        match engine.config.audit.durability {
            Durability::BeforeWarehouse => self.attempt().await?,
            // The warehouse starts while the attempt is committed; it is durable before the
            // first batch is handed to the front door (below).
            Durability::BeforeAnswer => self.audit.attempt_queued()?,
        }
        let params = &bound.params;
        let request_id = self.ctx.request_id.clone();
        let start_by = self.start_by;
        // A warehouse that refuses the user's token gets one refresh and one retry.
        let mut retried = false;
        let mut stream = loop {
            let execute = conn.connector.execute(QueryRequest {
                sql: &rewritten.sql,
                params,
                request_id: &request_id,
                credential: run_as.credential()?,
            });
            let execute = async {
                timeout_at(start_by.into(), execute)
                    .await
                    .map_err(|_| Error::timeout())
            };
            match unless_cancelled(self.ctx.cancel.as_mut(), execute).await? {
                Ok(s) => break s,
                Err(ConnectorError::Unauthorized(_)) if !retried && run_as.refreshable() => {
                    retried = true;
                    tracing::info!("the warehouse refused the token: refreshing once and retrying");
                    run_as.refresh(vault, &engine.audit).await?;
                }
                Err(ConnectorError::Unauthorized(_)) if run_as.refreshable() => {
                    return Err(crate::vault::reauth_required(&conn.id));
                }
                Err(e) => return Err(warehouse_error(&e)),
            }
        };
        self.audit.record.warehouse_query_id = stream.warehouse_query_id.clone();
        let first = self
            .first_batch(&mut stream, |e| warehouse_error(&e))
            .await?;
        // No byte of the answer before its attempt is durable; if it cannot be, the stream is
        // dropped here, which cancels the warehouse query.
        self.durable().await?;
        let completion = self.audit.completion();
        Ok(self.rows(
            stream,
            first,
            completion,
            engine.config.limits.max_result_rows,
        ))
    }

    /// Answers a catalog query ([`catalog::is_catalog_query`]) from the caller's visible
    /// catalog: the attempt (durable before anything else), the visible tables (probed once per
    /// `cache`, with the caller's own credentials, through the policy), then the query in its
    /// ephemeral session. `Mode::Describe` plans it only; `Mode::Explain` is refused (there is
    /// nothing the policy sends). `database` is the name the client connected to. Every error
    /// has been audited when this returns.
    pub async fn catalog(
        mut self,
        query: Query,
        database: &str,
        cache: &catalog::CatalogCache,
    ) -> Result<Outcome, Error> {
        match self.catalog_steps(&query, database, cache).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                let e = self.audit.settle(e).await;
                Err(self.refuse(e).await)
            }
        }
    }

    async fn catalog_steps(
        &mut self,
        query: &Query,
        database: &str,
        cache: &catalog::CatalogCache,
    ) -> Result<Outcome, Error> {
        let principal = Arc::clone(self.principal.as_ref().ok_or_else(Error::internal)?);
        self.record_sql(&query.sql, None);
        self.audit.record.connection = Some(catalog::CATALOG.into());
        let engine = self.engine;
        let policy = engine.policy();
        self.audit.record.policy_version = Some(policy.version.clone());
        if query.mode == Mode::Explain {
            return Err(Error::request(
                "not_supported",
                "catalog queries are answered by sluice itself: there is nothing to explain",
            ));
        }
        let connections: Vec<Arc<connection::Connection>> = match query.connection.as_deref() {
            Some(id) => vec![Arc::clone(route::named(&engine.connections, Some(id))?)],
            None => engine.connections.values().cloned().collect(),
        };
        // The attempt is durable before any warehouse is probed.
        self.attempt().await?;
        let visible = match cache.get(&policy.version, &principal.groups) {
            Some(v) => v,
            None => {
                let probing = visible(
                    engine,
                    self.ctx.request_id.clone(),
                    &policy,
                    &principal,
                    &connections,
                );
                let start_by = self.start_by;
                let probing = async {
                    timeout_at(start_by.into(), probing)
                        .await
                        .map_err(|_| Error::timeout())?
                };
                let (tables, probes) = unless_cancelled(self.ctx.cancel.as_mut(), probing).await?;
                self.audit.record.sub_queries = probes;
                cache.put(
                    &policy.version,
                    &principal.groups,
                    tables,
                    connections.len() > 1,
                )
            }
        };
        let planned = catalog::plan(&query.sql, &query.params, database, &visible).await?;
        if query.mode == Mode::Describe {
            let described = sluice_connectors::Described {
                // The caller's parameters are bound as text and cast to what the plan needs.
                param_oids: vec![25; query.params.len()],
                schema: planned.schema(),
            };
            let mut completion = self.audit.completion();
            completion.finish("described", None).await;
            return Ok(Outcome::Described(Some(described)));
        }
        let mut stream = planned.execute().await?;
        let first = self
            .first_batch(&mut stream, |e| warehouse_error(&e))
            .await?;
        let completion = self.audit.completion();
        Ok(self.rows(
            stream,
            first,
            completion,
            engine.config.limits.max_result_rows,
        ))
    }
}

/// The tables the caller may read in `connections`, each with the columns they may read and
/// the types the warehouse gives them (one probe per table, a few at a time), and the probes
/// sent. A connection the caller has no credential for fails the request (they are told to
/// authorize it); a table whose probe fails is left out (and logged).
async fn visible(
    engine: &Engine,
    request_id: String,
    policy: &Arc<Policy>,
    principal: &Arc<Principal>,
    connections: &[Arc<connection::Connection>],
) -> Result<(Vec<catalog::VisibleTable>, Vec<sluice_audit::SubQuery>), Error> {
    let who = federation::Who {
        principal: Arc::clone(principal),
        request_id,
        redact: engine.config.audit.redact_literals,
    };
    let mut sources = vec![];
    for conn in connections {
        let Some((cat, _)) = policy.for_caller(&conn.id, principal) else {
            continue;
        };
        let readable: Vec<_> = cat
            .tables()
            .iter()
            .filter(|t| t.readable_by(&principal.groups) && !t.view(&principal.groups).is_empty())
            .collect();
        if readable.is_empty() {
            continue;
        }
        let run_as = RunAs::choose(engine.vault.as_deref(), &engine.audit, conn, principal).await?;
        for rule in readable {
            sources.push((
                SourceRef {
                    conn: Arc::clone(conn),
                    rule: rule.clone(),
                    schema: rule.name.schema.clone(),
                    table: rule.name.table.clone(),
                },
                run_as.clone(),
            ));
        }
    }
    // Owned futures (a stream of futures borrowing from an iterator's items is not `Send` for
    // every lifetime, which the wire door's handlers need).
    let probes = futures::stream::iter(sources.into_iter().map(|(source, run_as)| {
        let who = who.clone();
        let policy = Arc::clone(policy);
        async move {
            let probed = federation::probe(&source, &policy, &who, &run_as).await;
            (source, probed)
        }
    }))
    .buffered(catalog::PROBE_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut tables = vec![];
    let mut sent = vec![];
    for (source, probed) in probes {
        match probed {
            Ok((_, schema, sql)) => {
                sent.push(catalog::probe_record(&source.conn.id, sql, true));
                tables.push(catalog::VisibleTable {
                    connection: source.conn.id.clone(),
                    schema: source.rule.name.schema.clone(),
                    table: source.rule.name.table.clone(),
                    columns: schema,
                });
            }
            // The caller must re-authorize: say so rather than show a partial catalog.
            Err(e) if e.kind == Kind::Credential => return Err(e),
            Err(e) => {
                tracing::warn!(
                    connection = %source.conn.id,
                    table = %source.rule.name,
                    code = e.code,
                    "virtual catalog: a table's probe failed; it is left out"
                );
            }
        }
    }
    Ok((tables, sent))
}

impl Request<'_> {
    /// A query over several connections: credentials, the attempt record, the workspace (schema
    /// probes, planning: each scan's sub-query through the policy), then the answer as usual.
    async fn federated(
        &mut self,
        query: &Query,
        principal: &Arc<Principal>,
        policy: Arc<Policy>,
        sources: Vec<SourceRef>,
    ) -> Result<Outcome, Error> {
        let engine = self.engine;
        self.audit.record.connection = Some(FEDERATED.into());
        self.audit.record.policy_version = Some(policy.version.clone());
        self.audit.record.tables = sources.iter().map(SourceRef::audit_name).collect();
        if !query.params.is_empty() {
            return Err(params::not_in_federated());
        }

        let mut run_as = std::collections::BTreeMap::new();
        for conn in sources.iter().map(SourceRef::connection) {
            if !run_as.contains_key(&conn.id) {
                let chosen =
                    RunAs::choose(engine.vault.as_deref(), &engine.audit, conn, principal).await?;
                run_as.insert(conn.id.clone(), chosen);
            }
        }
        // The attempt is durable before any source sees anything (schema probes included).
        self.attempt().await?;
        if query.mode == Mode::Describe {
            // The workspace plans with every source's schema probe: not done for a Describe.
            let mut completion = self.audit.completion();
            completion.finish("described", None).await;
            return Ok(Outcome::Described(None));
        }
        let planning = async {
            timeout_at(
                self.start_by.into(),
                federation::plan(
                    &engine.config.federation,
                    Arc::clone(&policy),
                    principal,
                    sources,
                    run_as,
                    &query.sql,
                    &self.ctx.request_id,
                    engine.config.audit.redact_literals,
                ),
            )
            .await
            .map_err(|_| Error::timeout())?
        };
        let planned = unless_cancelled(self.ctx.cancel.as_mut(), planning).await?;
        let sub_queries = planned.log.lock().map(|l| l.clone()).unwrap_or_default();
        self.audit.record.sub_queries = sub_queries.clone();
        if query.mode == Mode::Explain {
            let doc = json!({
                "decision": "allow",
                "connection": FEDERATED,
                "tables": planned.tables,
                "sub_queries": sub_queries
                    .iter()
                    .map(|s| json!({"connection": s.connection, "sql": s.sql}))
                    .collect::<Vec<_>>(),
                "plan": federation::display(&planned.plan),
            });
            return Ok(self.explained(doc).await);
        }
        let log = Arc::clone(&planned.log);
        let mut stream = federation::execute(planned, engine.config.federation.target_partitions)?;
        let first = self
            .first_batch(&mut stream, |e| match e {
                // A source refused the user's token: that connection needs re-authorization
                // (no refresh-and-retry inside a federated query).
                ConnectorError::Unauthorized(id) if engine.connections.contains_key(&id) => {
                    crate::vault::reauth_required(&id)
                }
                e => warehouse_error(&e),
            })
            .await?;
        let mut completion = self.audit.completion();
        completion.sub_queries = Some(log);
        let limits = &engine.config.limits;
        let max_rows = policy
            .row_limit(&principal.groups)
            .map_or(limits.max_result_rows, |g| g.min(limits.max_result_rows));
        Ok(self.rows(stream, first, completion, max_rows))
    }

    /// The answer: the stream from its first batch on, capped, with its completion record.
    fn rows(
        &self,
        stream: sluice_connectors::QueryStream,
        first: Option<arrow::array::RecordBatch>,
        completion: audit::Completion,
        max_rows: u64,
    ) -> Outcome {
        Outcome::Rows(Box::new(Answer::new(
            stream,
            first,
            completion,
            max_rows,
            self.deadline,
        )))
    }

    /// Commits the attempt record by the start deadline; refuses the query if it cannot be.
    async fn attempt(&mut self) -> Result<(), Error> {
        timeout_at(self.start_by.into(), self.audit.attempt())
            .await
            .map_err(|_| Error::timeout())?
    }

    /// Waits (by the start deadline) until the queued attempt record is durable.
    async fn durable(&mut self) -> Result<(), Error> {
        timeout_at(self.start_by.into(), self.audit.durable())
            .await
            .map_err(|_| Error::timeout())?
    }

    /// Waits for the first batch, so early failures are plain errors.
    async fn first_batch(
        &mut self,
        stream: &mut sluice_connectors::QueryStream,
        map: impl FnOnce(ConnectorError) -> Error,
    ) -> Result<Option<arrow::array::RecordBatch>, Error> {
        let first = async {
            timeout_at(self.start_by.into(), stream.batches.next())
                .await
                .map_err(|_| Error::timeout())?
                .transpose()
                .map_err(map)
        };
        unless_cancelled(self.ctx.cancel.as_mut(), first).await
    }

    /// An explain's completion record (outcome `explained`), and its document.
    async fn explained(&mut self, doc: Value) -> Outcome {
        let mut completion = self.audit.completion();
        completion.finish("explained", None).await;
        Outcome::Explained(doc)
    }
}

/// The principal's role does not allow data queries (compliance principals never may).
pub fn forbidden_role() -> Error {
    Error::new(
        Kind::Forbidden,
        "forbidden_role",
        "your role may not run data queries (compliance principals read the audit log only)",
    )
}

/// Whether an explain answers this error with a `reject` document (a refusal of the query
/// itself) rather than with the error (the audit log, time, the caller leaving, a name that is
/// not declared).
fn explains(e: &Error) -> bool {
    !matches!(
        e.kind,
        Kind::Audit | Kind::Internal | Kind::Timeout | Kind::ClientGone
    ) && e.code != "unknown_connection"
}

/// A caller parameter as JSON.
fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Null => Value::Null,
        ParamValue::Bool(b) => json!(b),
        ParamValue::Int(i) => json!(i),
        ParamValue::Float(f) => json!(f),
        ParamValue::Text(s) | ParamValue::Tenant(s) | ParamValue::Attribute(s) => json!(s),
        ParamValue::TextList(l) => json!(l),
        ParamValue::IntList(l) => json!(l),
    }
}

/// The explain document of a refusal.
fn reject(e: &Error) -> Value {
    json!({"decision": "reject", "code": e.code, "reason": e.reason, "message": e.message})
}
