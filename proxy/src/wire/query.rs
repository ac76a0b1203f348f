//! The simple and extended query protocols over the engine.
//!
//! Every statement that is not answered locally ([`crate::wire::local`]) is one engine request:
//! the connection's credential is verified again (expiry and revocation hold as on HTTP), the
//! policy rewrites the SQL, the attempt is audited, the warehouse runs it with the user's own
//! credential, and the Arrow answer streams out as DataRows — batch by batch, never collected.
//!
//! Extended protocol:
//! - Parse stores the text (and counts its `$n` parameters); nothing runs.
//! - Bind binds the client's values (text or binary) as engine parameters, bound all the way to
//!   the warehouse — never spliced into SQL.
//! - Describe of a portal starts its query (the RowDescription needs the answer's Arrow
//!   schema); Execute streams from it, at most `max_rows` rows, then `PortalSuspended`. A
//!   portal is closed by Close, by the next Bind of its name, and, outside a transaction block,
//!   by Sync; a dropped answer cancels the warehouse query and is recorded as `cancelled`.
//! - Describe of a statement answers its parameter types and `NoData`: its columns are known
//!   only when it runs (drivers describe the portal, which does run it).
//!
//! Transactions are read-only and local: `BEGIN` … `COMMIT` only keep portals open across
//! Syncs; each statement is its own warehouse transaction.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::row_encoder::RowEncoder;
use async_trait::async_trait;
use bytes::BytesMut;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{DataRow, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query as SimpleQuery;
use tokio::sync::watch;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Credential;
use crate::auth::principal::ClientInfo as Client;
use crate::context::REQUEST_ID;
use crate::engine::catalog::{self, CatalogCache};
use crate::engine::{Answer, Context, Mode, Outcome, ParamValue, Query, params};
use crate::error::{Error, Kind};
use crate::wire::copy;
use crate::wire::local::{self, Local, SessionFacts};
use crate::wire::session::{CancelSlot, Registration};
use crate::wire::sqlstate;

/// A parsed statement: its text, how many `$n` parameters it has, and, when it is answered
/// locally, what it is (or why it is refused).
#[derive(Debug, Clone)]
pub struct Prepared {
    sql: String,
    params: usize,
    local: Option<Result<Vec<Local>, Error>>,
    /// Whether it is a catalog query (answered by the virtual catalog).
    catalog: bool,
    /// The query of a binary `COPY (query) TO STDOUT`.
    copy: Option<String>,
    /// The parameter types the warehouse gave when the statement was described (what the
    /// client was told, so what its binary values are encoded as).
    described: Arc<Mutex<Option<Vec<Type>>>>,
}

impl Prepared {
    fn new(sql: &str) -> Prepared {
        let local = local::classify(sql).transpose();
        Prepared {
            sql: sql.to_string(),
            params: placeholders(sql),
            catalog: local.is_none() && catalog::is_catalog_query(sql),
            copy: local
                .is_none()
                .then(|| copy::binary_copy_out(sql))
                .flatten(),
            local,
            described: Arc::default(),
        }
    }

    fn described_type(&self, i: usize) -> Option<Type> {
        self.described
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|t| t.get(i).cloned())
    }
}

/// The highest `$n` in a statement (parameters are numbered from 1), from sqlparser's
/// tokenizer (so `'$1'` in a string or comment is not one).
fn placeholders(sql: &str) -> usize {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return 0;
    };
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .min(params::MAX_PARAMS)
}

/// Statement texts whose classification ([`Prepared::new`]) is kept, shared by every
/// connection: a client that sends the same text in a Parse message for every query (the
/// extended protocol without named statements, as pgbench `-M extended` and many drivers do)
/// has it parsed once. The classification depends on the text alone (never on the caller), so
/// sharing it shows no one anything.
const CLASSIFIED_TEXTS: usize = 1024;
/// Longest text whose classification is kept (longer ones are classified every time).
const CLASSIFIED_TEXT_BYTES: usize = 16 * 1024;

/// Parse: stores the text (classified: local, catalog, binary COPY, or for the engine); the
/// engine parses it (with the policy) when it runs.
pub struct Parser {
    classified: Mutex<hashlink::LruCache<String, Prepared>>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            classified: Mutex::new(hashlink::LruCache::new(CLASSIFIED_TEXTS)),
        }
    }
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

impl Parser {
    /// The statement for `sql`: its classification kept from an earlier Parse of the same
    /// text, or made now; each statement gets its own `described` state.
    fn prepare(&self, sql: &str) -> Prepared {
        if sql.len() > CLASSIFIED_TEXT_BYTES {
            return Prepared::new(sql);
        }
        let kept = self
            .classified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned();
        if let Some(mut p) = kept {
            p.described = Arc::default();
            return p;
        }
        let p = Prepared::new(sql);
        self.classified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string(), p.clone());
        p
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(self.prepare(sql)))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![Type::TEXT; stmt.params])
    }

    fn get_result_schema(
        &self,
        _stmt: &Prepared,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

/// A portal whose query has started: its answer, encoded row by row.
pub(crate) struct Running {
    /// Which Bind made it (a new Bind of the same name makes a new portal).
    portal: usize,
    answer: Answer,
    fields: Arc<Vec<FieldInfo>>,
    current: Option<RowEncoder>,
    cancel: watch::Receiver<bool>,
    /// The answer has ended (CommandComplete sent): a further Execute returns no rows, as
    /// PostgreSQL's does for a completed portal.
    done: bool,
}

impl Running {
    /// The answer's next row, encoded in the portal's formats: from the current batch, else
    /// from the next one (waiting for it stops at a cancel). `None` at the end of the answer.
    /// An error ends the answer (its completion recorded) and is the client's error.
    /// A value of the answer could not be encoded: the answer ends (its failure recorded).
    async fn not_encoded(&mut self, e: &(dyn std::fmt::Display + Sync)) -> PgWireError {
        tracing::warn!(error = %e, "pgwire: a value could not be encoded");
        let err = Error::new(
            Kind::Internal,
            "internal",
            "the answer could not be encoded",
        );
        self.answer.finish(Some(&err)).await;
        sqlstate::error(&err)
    }

    async fn next_row(&mut self, session: &Session) -> PgWireResult<Option<DataRow>> {
        loop {
            if let Some(encoder) = self.current.as_mut() {
                match encoder.next_row() {
                    Some(Ok(row)) => {
                        self.answer.sent(row.data.len() as u64);
                        return Ok(Some(row));
                    }
                    Some(Err(e)) => return Err(self.not_encoded(&e).await),
                    None => self.current = None,
                }
            }
            let next = if *self.cancel.borrow() {
                Err(cancelled(session))
            } else {
                tokio::select! {
                    b = self.answer.next() => b,
                    _ = self.cancel.wait_for(|c| *c) => Err(cancelled(session)),
                }
            };
            match next {
                Ok(Some(batch)) => {
                    // Timestamps, times and floats in PostgreSQL's own text form.
                    let batch = match super::text::postgres_text(batch, &self.fields) {
                        Ok(b) => b,
                        Err(e) => return Err(self.not_encoded(&e).await),
                    };
                    self.current = Some(RowEncoder::new(batch, Arc::clone(&self.fields)));
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.answer.finish(Some(&e)).await;
                    return Err(sqlstate::error(&e));
                }
            }
        }
    }
}

/// The state of one authenticated wire connection.
pub struct Session {
    /// The password the client authenticated with (a data credential), verified again for
    /// statements so expiry and revocation hold as on HTTP (see `held`).
    pub(crate) credential: zeroize::Zeroizing<String>,
    /// The user name the client sent (empty or the principal's user).
    pub(crate) claimed_user: String,
    /// The verified user at startup.
    pub user: String,
    /// The database name the client connected to.
    pub database: String,
    /// The connection it selects (`None`: the engine routes).
    pub connection: Option<String>,
    /// Address and application name, for the audit log and rate limits.
    pub client: Client,
    /// The process id told to the client.
    pub pid: i32,
    /// Cancellation of the running statement.
    pub cancel: Arc<CancelSlot>,
    pub(crate) _registration: Registration,
    /// `SET` values, by lower-cased name.
    pub settings: Mutex<BTreeMap<String, String>>,
    /// Portals whose query has started (named by the client; `""` is the unnamed one).
    pub(crate) running: Mutex<HashMap<String, Running>>,
    /// What the caller sees, for the virtual catalog (probed on its first catalog query).
    pub(crate) catalog: CatalogCache,
    /// The open transaction block's savepoints, oldest first.
    pub(crate) savepoints: Mutex<Vec<String>>,
    /// The credential's verification, reused by the statements while it holds (a JWT until
    /// it expires or its key leaves the key set; sessions and API keys are verified again for
    /// every statement).
    pub(crate) held: Mutex<Option<crate::auth::Held>>,
}

impl Session {
    /// Takes a started portal out (to stream from it without holding the lock).
    pub(crate) fn take_running(&self, portal: &str) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(portal)
    }

    /// Keeps a started portal for the next Execute.
    pub(crate) fn keep_running(&self, portal: &str, r: Running) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(portal.to_string(), r);
    }

    /// Closes started portals: every one (`None`, transaction end) or one by name. Their answers
    /// are dropped, which cancels the warehouse query and records the completion (`cancelled`).
    pub(crate) fn close_running(&self, portal: Option<&str>) {
        let dropped: Vec<Running> = {
            let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match portal {
                None => map.drain().map(|(_, r)| r).collect(),
                Some(p) => map.remove(p).into_iter().collect(),
            }
        };
        drop(dropped);
    }

    /// A setting's value (`SET` by the client, else the server's default).
    pub fn setting(&self, name: &str) -> Option<String> {
        let set = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = set.get(name) {
            return Some(v.clone());
        }
        drop(set);
        let fixed = match name {
            "transaction_isolation" | "default_transaction_isolation" => Some("read committed"),
            "transaction_read_only" => Some("on"),
            "max_identifier_length" => Some("63"),
            "application_name" => None,
            _ => None,
        };
        if let Some(v) = fixed {
            return Some(v.to_string());
        }
        if name == "application_name" {
            return Some(self.client.user_agent.clone().unwrap_or_default());
        }
        local::defaults()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Where an Execute stopped.
enum Stopped {
    /// At `max_rows`: the portal stays open.
    Suspended,
    /// At the end of the answer (CommandComplete sent).
    Finished,
}

/// The query handlers (shared by every connection).
pub struct Queries {
    state: Arc<AppState>,
    parser: Arc<Parser>,
}

fn session<C: ClientInfo>(client: &C) -> Result<Arc<Session>, PgWireError> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| sqlstate::fatal(&Error::internal()))
}

fn portal_id<S>(p: &Arc<Portal<S>>) -> usize {
    Arc::as_ptr(p) as usize
}

/// The statement was cancelled (CancelRequest) or the client left.
fn cancelled(session: &Session) -> Error {
    if session.cancel.is_gone() {
        Error::client_gone()
    } else {
        Error::new(
            Kind::ClientGone,
            "query_cancelled",
            "canceling statement due to user request",
        )
    }
}

/// An engine error for the client: fatal when the connection's credential no longer holds.
fn wire_error(e: &Error) -> PgWireError {
    if e.kind == Kind::Auth {
        sqlstate::fatal(e)
    } else {
        sqlstate::error(e)
    }
}

/// The method a password credential tries (for the audit log of a failure).
fn method_tried(password: &str) -> &'static str {
    use crate::auth::principal::{API_KEY_PREFIX, SESSION_PREFIX};
    if password.starts_with(SESSION_PREFIX) {
        "session"
    } else if password.starts_with(API_KEY_PREFIX) {
        "api_key"
    } else {
        "jwt"
    }
}

fn unsupported_column() -> Error {
    Error::new(
        Kind::Request,
        "not_supported",
        "a column of the answer has a type the PostgreSQL protocol cannot carry",
    )
}

fn text_field(name: &str) -> FieldInfo {
    FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)
}

fn row_description(fields: &[FieldInfo]) -> PgWireBackendMessage {
    PgWireBackendMessage::RowDescription(RowDescription::new(
        fields.iter().map(Into::into).collect(),
    ))
}

fn complete(tag: Tag) -> PgWireBackendMessage {
    PgWireBackendMessage::CommandComplete(CommandComplete::from(tag))
}

impl Queries {
    /// The handlers over the daemon's state.
    pub fn new(state: Arc<AppState>) -> Queries {
        Queries {
            state,
            parser: Arc::new(Parser::default()),
        }
    }

    /// Describes a statement at the warehouse (through the policy and the audit, like a run).
    async fn describe(
        &self,
        session: &Session,
        prepared: &Prepared,
    ) -> Result<Option<sluice_connectors::Described>, Error> {
        let params = vec![ParamValue::Null; prepared.params];
        match self
            .request(
                session,
                &prepared.sql,
                params,
                Mode::Describe,
                prepared.catalog,
            )
            .await?
        {
            Outcome::Described(d) => Ok(d),
            _ => Err(Error::internal()),
        }
    }

    /// Starts a statement in the engine: the credential verified again, then the engine's
    /// whole pipeline up to the answer's first batch.
    async fn start(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ParamValue>,
        format: &Format,
        catalog: bool,
    ) -> Result<Running, Error> {
        let mut answer = match self
            .request(session, sql, params, Mode::Run, catalog)
            .await?
        {
            Outcome::Rows(a) => *a,
            _ => return Err(Error::internal()),
        };
        let fields = match arrow_schema_to_pg_fields(answer.schema(), format, None) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "pgwire: an answer column has no PostgreSQL type");
                let err = unsupported_column();
                answer.finish(Some(&err)).await;
                return Err(err);
            }
        };
        Ok(Running {
            portal: 0,
            answer,
            fields: Arc::new(fields),
            current: None,
            // Already `true` if a cancel came while the answer started.
            cancel: session.cancel.subscribe(),
            done: false,
        })
    }

    /// One engine request for a statement of this session (`catalog`: a catalog query, for
    /// the virtual catalog).
    async fn request(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ParamValue>,
        mode: Mode,
        catalog: bool,
    ) -> Result<Outcome, Error> {
        let request_id = Uuid::new_v4().to_string();
        REQUEST_ID
            .scope(request_id.clone(), async {
                let cancel = session.cancel.begin();
                let ctx = Context {
                    request_id,
                    client: session.client.clone(),
                    cancel: Some(cancel.clone()),
                    start_within: Duration::from_millis(
                        self.state.config.server.request_timeout_ms,
                    ),
                };
                let mut request = self.state.engine.begin(ctx);
                let credential = Credential::Password {
                    user: &session.claimed_user,
                    password: &session.credential,
                };
                let principal = match self
                    .state
                    .auth
                    .authenticate_held(credential, &session.client, &session.held)
                    .await
                {
                    // The credential cannot change hands within a session.
                    Ok(p) if p.user == session.user => p,
                    Ok(_) => {
                        let e = Error::new(
                            Kind::Auth,
                            "user_mismatch",
                            "the credential no longer names this session's user",
                        );
                        return Err(request.refuse(e).await);
                    }
                    Err(e) => {
                        let tried = method_tried(&session.credential);
                        return Err(request.auth_failed(tried, e.into()).await);
                    }
                };
                if let Err(e) = request.authenticated(principal) {
                    return Err(request.refuse(e).await);
                }
                let query = Query {
                    sql: sql.to_string(),
                    params,
                    connection: session.connection.clone(),
                    mode,
                };
                let outcome = if catalog {
                    request
                        .catalog(query, &session.database, &session.catalog)
                        .await
                } else {
                    request.run(query).await
                };
                match outcome {
                    // The engine reports a CancelRequest as the client leaving.
                    Err(e) if e.kind == Kind::ClientGone => Err(cancelled(session)),
                    other => other,
                }
            })
            .await
    }

    /// Streams rows of a started answer: at most `max_rows` (0: all), then stops.
    async fn stream<C>(
        &self,
        client: &mut C,
        session: &Session,
        running: &mut Running,
        max_rows: usize,
    ) -> PgWireResult<Stopped>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut sent = 0usize;
        if running.done {
            client
                .feed(complete(Tag::new("SELECT").with_rows(0)))
                .await?;
            return Ok(Stopped::Finished);
        }
        loop {
            if max_rows > 0 && sent >= max_rows {
                return Ok(Stopped::Suspended);
            }
            match running.next_row(session).await? {
                Some(row) => {
                    client.feed(PgWireBackendMessage::DataRow(row)).await?;
                    sent += 1;
                }
                None => {
                    if running.answer.truncated() {
                        let notice = ErrorInfo::new(
                            "WARNING".into(),
                            "01000".into(),
                            format!(
                                "the answer was truncated at {} rows (limits.max_result_rows)",
                                running.answer.max_rows()
                            ),
                        );
                        client
                            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                                notice,
                            )))
                            .await?;
                    }
                    running.answer.finish(None).await;
                    running.done = true;
                    client
                        .feed(complete(Tag::new("SELECT").with_rows(sent)))
                        .await?;
                    return Ok(Stopped::Finished);
                }
            }
        }
    }

    /// Streams a started answer as binary `COPY ... TO STDOUT`: CopyOutResponse, the header
    /// and the tuples in CopyData messages, the trailer, CopyDone, `COPY n`.
    async fn copy_out<C>(
        &self,
        client: &mut C,
        session: &Session,
        running: &mut Running,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = running.fields.len();
        client
            .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                1,
                i16::try_from(columns).unwrap_or(i16::MAX),
                vec![1; columns],
            )))
            .await?;
        // One tuple per CopyData, the header with the first and the trailer on its own, as
        // PostgreSQL sends them: drivers (ADBC's) read exactly one record per message.
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(&copy::header());
        let mut rows = 0usize;
        while let Some(row) = running.next_row(session).await? {
            copy::put_tuple(&mut buf, &row);
            rows += 1;
            let tuple = buf.split().freeze();
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(tuple)))
                .await?;
        }
        // With no tuple, the header and the trailer share the message.
        buf.extend_from_slice(&copy::trailer());
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(buf.freeze())))
            .await?;
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
        running.answer.finish(None).await;
        client
            .feed(complete(Tag::new("COPY").with_rows(rows)))
            .await?;
        Ok(())
    }

    /// Runs a locally answered statement; `describe`: send its RowDescription first.
    async fn local<C>(
        &self,
        client: &mut C,
        session: &Session,
        statement: &Local,
        describe: bool,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match statement {
            Local::Set(name, value) => {
                session
                    .settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), value.clone());
            }
            Local::SetNothing => {}
            Local::Reset(name) => {
                let mut s = session.settings.lock().unwrap_or_else(|p| p.into_inner());
                match name {
                    Some(n) => {
                        s.remove(n);
                    }
                    None => s.clear(),
                }
            }
            Local::Show(name) => {
                let Some(value) = session.setting(name) else {
                    return Err(sqlstate::error(&Error::new(
                        Kind::Request,
                        "unknown_setting",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )));
                };
                let fields = Arc::new(vec![text_field(name)]);
                if describe {
                    client.feed(row_description(&fields)).await?;
                }
                let mut enc = pgwire::api::results::DataRowEncoder::new(Arc::clone(&fields));
                enc.encode_field(&Some(value))?;
                client
                    .feed(PgWireBackendMessage::DataRow(enc.take_row()))
                    .await?;
                client.feed(complete(Tag::new("SHOW"))).await?;
                return Ok(());
            }
            Local::Begin => {
                if client.transaction_status() != TransactionStatus::Idle {
                    let warn = ErrorInfo::new(
                        "WARNING".into(),
                        "25001".into(),
                        "there is already a transaction in progress".into(),
                    );
                    client
                        .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                            warn,
                        )))
                        .await?;
                }
                client.set_transaction_status(TransactionStatus::Transaction);
            }
            Local::Savepoint(name) => {
                if client.transaction_status() == TransactionStatus::Idle {
                    return Err(sqlstate::error(&Error::new(
                        Kind::Request,
                        "no_transaction",
                        "SAVEPOINT can only be used in transaction blocks",
                    )));
                }
                session
                    .savepoints
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.clone());
            }
            Local::Release(name) | Local::RollbackTo(name) => {
                let rollback = matches!(statement, Local::RollbackTo(_));
                if client.transaction_status() == TransactionStatus::Idle {
                    return Err(sqlstate::error(&Error::new(
                        Kind::Request,
                        "no_transaction",
                        format!(
                            "{} can only be used in transaction blocks",
                            if rollback {
                                "ROLLBACK TO SAVEPOINT"
                            } else {
                                "RELEASE SAVEPOINT"
                            }
                        ),
                    )));
                }
                let mut points = session.savepoints.lock().unwrap_or_else(|p| p.into_inner());
                let Some(at) = points.iter().rposition(|p| p == name) else {
                    return Err(sqlstate::error(&Error::new(
                        Kind::Request,
                        "unknown_savepoint",
                        format!("savepoint \"{name}\" does not exist"),
                    )));
                };
                // Rolling back to a savepoint keeps it; releasing it removes it and later ones.
                points.truncate(if rollback { at + 1 } else { at });
                drop(points);
                if rollback {
                    client.set_transaction_status(TransactionStatus::Transaction);
                }
            }
            Local::Commit | Local::Rollback => {
                session
                    .savepoints
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                session.close_running(None);
                client.portal_store().clear_portals();
                client.set_transaction_status(TransactionStatus::Idle);
            }
            Local::Discard(_) => {
                session.close_running(None);
                session
                    .settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
            Local::Functions(cols) => {
                let fields = Arc::new(cols.iter().map(|(n, _)| text_field(n)).collect::<Vec<_>>());
                if describe {
                    client.feed(row_description(&fields)).await?;
                }
                let facts = SessionFacts {
                    user: &session.user,
                    database: &session.database,
                    pid: session.pid,
                };
                let mut enc = pgwire::api::results::DataRowEncoder::new(Arc::clone(&fields));
                for (_, f) in cols {
                    let v = f.as_deref().and_then(|f| local::function_value(f, &facts));
                    enc.encode_field(&v)?;
                }
                client
                    .feed(PgWireBackendMessage::DataRow(enc.take_row()))
                    .await?;
                client
                    .feed(complete(Tag::new("SELECT").with_rows(1)))
                    .await?;
                return Ok(());
            }
        }
        client.feed(complete(Tag::new(&statement.tag()))).await?;
        Ok(())
    }

    /// A failed transaction block accepts only its end.
    fn check_failed<C: ClientInfo>(client: &C, locals: Option<&[Local]>) -> PgWireResult<()> {
        let ends = locals.is_some_and(|l| {
            l.first().is_some_and(|s| {
                matches!(s, Local::Commit | Local::Rollback | Local::RollbackTo(_))
            })
        });
        if client.transaction_status() == TransactionStatus::Error && !ends {
            return Err(sqlstate::error(&Error::new(
                Kind::Request,
                "in_failed_transaction",
                "current transaction is aborted, commands ignored until end of transaction block",
            )));
        }
        Ok(())
    }

    async fn simple<C>(&self, client: &mut C, sql: &str) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client)?;
        if sql.chars().all(|c| c == ';' || c.is_whitespace()) {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(());
        }
        let prepared = self.parser.prepare(sql);
        match prepared
            .local
            .transpose()
            .map_err(|e| sqlstate::error(&e))?
        {
            Some(locals) => {
                Self::check_failed(client, Some(&locals))?;
                for l in &locals {
                    self.local(client, &session, l, true).await?;
                }
                Ok(())
            }
            None if let Some(inner) = prepared.copy => {
                Self::check_failed(client, None)?;
                let mut running = self
                    .start(&session, &inner, vec![], &Format::UnifiedBinary, false)
                    .await
                    .map_err(|e| wire_error(&e))?;
                self.copy_out(client, &session, &mut running).await
            }
            None => {
                Self::check_failed(client, None)?;
                let mut running = self
                    .start(
                        &session,
                        sql,
                        vec![],
                        &Format::UnifiedText,
                        prepared.catalog,
                    )
                    .await
                    .map_err(|e| wire_error(&e))?;
                client.feed(row_description(&running.fields)).await?;
                self.stream(client, &session, &mut running, 0).await?;
                Ok(())
            }
        }
    }

    /// Starts a bound portal's query.
    async fn start_portal(
        &self,
        session: &Session,
        portal: &Arc<Portal<Prepared>>,
    ) -> Result<Running, Error> {
        let prepared = &portal.statement.statement;
        let values = bound_values(portal)?;
        let mut running = self
            .start(
                session,
                &prepared.sql,
                values,
                &portal.result_column_format,
                prepared.catalog,
            )
            .await?;
        running.portal = portal_id(portal);
        Ok(running)
    }

    /// The started query of a portal: the one kept for it, or a new one.
    async fn running_for(
        &self,
        session: &Session,
        name: &str,
        portal: &Arc<Portal<Prepared>>,
    ) -> Result<Running, Error> {
        match session.take_running(name) {
            Some(r) if r.portal == portal_id(portal) => Ok(r),
            stale => {
                drop(stale);
                self.start_portal(session, portal).await
            }
        }
    }
}

/// A portal's bound parameters as engine values (as many as the statement has).
fn bound_values(portal: &Portal<Prepared>) -> Result<Vec<ParamValue>, Error> {
    let prepared = &portal.statement.statement;
    if portal.parameter_len() != prepared.params {
        return Err(Error::request(
            "invalid_parameters",
            format!(
                "bind message supplies {} parameters, but the statement requires {}",
                portal.parameter_len(),
                prepared.params
            ),
        ));
    }
    (0..portal.parameter_len())
        .map(|i| bound(portal, i))
        .collect()
}

/// A bound parameter as an engine value: the client's declared type (or text) read in the
/// client's format. Text values of types the engine has no value for are passed as text (the
/// warehouse reads them as the type it infers, as PostgreSQL reads a text parameter).
fn bound(portal: &Portal<Prepared>, i: usize) -> Result<ParamValue, Error> {
    let ty = portal
        .statement
        .parameter_types
        .get(i)
        .cloned()
        .flatten()
        .or_else(|| portal.statement.statement.described_type(i))
        .unwrap_or(Type::UNKNOWN);
    let bad = |e: &dyn std::fmt::Display| {
        Error::request(
            "invalid_parameter",
            format!("parameter ${}: not a valid {} value: {e}", i + 1, ty.name()),
        )
    };
    if matches!(portal.parameters.get(i), Some(None)) {
        return Ok(ParamValue::Null);
    }
    let value = match ty {
        Type::BOOL => portal
            .parameter::<bool>(i, &ty)
            .map(|v| v.map(ParamValue::Bool)),
        Type::INT2 => portal
            .parameter::<i16>(i, &ty)
            .map(|v| v.map(|x| ParamValue::Int(x.into()))),
        Type::INT4 => portal
            .parameter::<i32>(i, &ty)
            .map(|v| v.map(|x| ParamValue::Int(x.into()))),
        Type::INT8 => portal
            .parameter::<i64>(i, &ty)
            .map(|v| v.map(ParamValue::Int)),
        Type::FLOAT4 => portal
            .parameter::<f32>(i, &ty)
            .map(|v| v.map(|x| ParamValue::Float(x.into()))),
        Type::FLOAT8 => portal
            .parameter::<f64>(i, &ty)
            .map(|v| v.map(ParamValue::Float)),
        _ if portal.parameter_format.is_binary(i) => match ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => portal
                .parameter::<String>(i, &ty)
                .map(|v| v.map(ParamValue::Text)),
            Type::NUMERIC => portal
                .parameter::<rust_decimal::Decimal>(i, &ty)
                .map(|v| v.map(|d| ParamValue::Text(d.to_string()))),
            Type::DATE => portal
                .parameter::<chrono::NaiveDate>(i, &ty)
                .map(|v| v.map(|d| ParamValue::Text(d.to_string()))),
            Type::TIMESTAMP => portal
                .parameter::<chrono::NaiveDateTime>(i, &ty)
                .map(|v| v.map(|d| ParamValue::Text(d.format("%Y-%m-%d %H:%M:%S%.f").to_string()))),
            Type::TIMESTAMPTZ => portal
                .parameter::<chrono::DateTime<chrono::FixedOffset>>(i, &ty)
                .map(|v| v.map(|d| ParamValue::Text(d.to_rfc3339()))),
            _ => {
                return Err(Error::request(
                    "not_supported",
                    format!(
                        "parameter ${}: binary values of type {} are not supported; send it as text",
                        i + 1,
                        ty.name()
                    ),
                ));
            }
        },
        // Text format: the text itself.
        _ => match portal.parameters.get(i) {
            Some(Some(b)) => match std::str::from_utf8(b) {
                Ok(s) => Ok(Some(ParamValue::Text(s.to_string()))),
                Err(e) => return Err(bad(&e)),
            },
            _ => Ok(None),
        },
    };
    let value = value.map_err(|e| bad(&e))?;
    match value {
        Some(ParamValue::Text(s)) if s.len() > params::MAX_PARAM_BYTES => Err(Error::request(
            "invalid_parameter",
            format!(
                "parameter ${} is longer than {} bytes",
                i + 1,
                params::MAX_PARAM_BYTES
            ),
        )),
        Some(v) => Ok(v),
        None => Ok(ParamValue::Null),
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn on_query<C>(&self, client: &mut C, query: SimpleQuery) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = self.simple(client, &query.query).await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        // On an error, pgwire sends it, then ReadyForQuery (in the failed state inside a
        // transaction block).
        result?;
        let status = client.transaction_status();
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is overridden: the answer streams without being collected.
        Err(sqlstate::error(&Error::internal()))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    // Parse, Bind and Describe answer with `feed`, not `send`: their replies go out with the
    // next flush (Sync, Flush, or a full buffer), in one write with the rows and
    // ReadyForQuery, as PostgreSQL buffers them. pgwire's defaults flush each one.

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
        let parser = self.query_parser();
        match StoredStatement::parse(client, &message, parser).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(sqlstate::error(&Error::request(
                        "invalid_parameters",
                        format!(
                            "bind message supplies {} parameters, but prepared statement \
                             {statement_name:?} requires 0",
                            message.parameters.len()
                        ),
                    )));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name)),
        };
        let session = session(client)?;
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = self
            .execute(
                client,
                &session,
                &name,
                &portal,
                // 0 (or a negative count) is "all rows".
                usize::try_from(message.max_rows).unwrap_or(0),
            )
            .await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_string();
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let stmt = match client.portal_store().get_statement(&name) {
                    Some(Entry::Value(s)) => s,
                    Some(Entry::Empty) => {
                        client
                            .feed(PgWireBackendMessage::NoData(NoData::new()))
                            .await?;
                        return Ok(());
                    }
                    None => return Err(PgWireError::StatementNotFound(name)),
                };
                let prepared = &stmt.statement;
                let fields = if prepared.local.is_some() {
                    local_fields(prepared)
                } else if prepared.copy.is_some() {
                    // COPY answers with CopyOutResponse, not rows.
                    vec![]
                } else {
                    let session = session(client)?;
                    Self::check_failed(client, None)?;
                    match self
                        .describe(&session, prepared)
                        .await
                        .map_err(|e| wire_error(&e))?
                    {
                        Some(d) => {
                            let types = d
                                .param_oids
                                .iter()
                                .map(|o| Type::from_oid(*o).unwrap_or(Type::TEXT))
                                .collect();
                            *prepared.described.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(types);
                            arrow_schema_to_pg_fields(&d.schema, &Format::UnifiedText, None)
                                .map_err(|_| sqlstate::error(&unsupported_column()))?
                        }
                        // The warehouse cannot say without running it.
                        None => vec![],
                    }
                };
                let types = parameter_types(&stmt);
                client
                    .feed(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(types.iter().map(Type::oid).collect()),
                    ))
                    .await?;
                if fields.is_empty() {
                    client
                        .feed(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                } else {
                    client.feed(row_description(&fields)).await?;
                }
                Ok(())
            }
            TARGET_TYPE_BYTE_PORTAL => {
                let portal = match client.portal_store().get_portal(&name) {
                    Some(Entry::Value(p)) => p,
                    Some(Entry::Empty) => {
                        client
                            .feed(PgWireBackendMessage::NoData(NoData::new()))
                            .await?;
                        return Ok(());
                    }
                    None => return Err(PgWireError::PortalNotFound(name)),
                };
                if portal.statement.statement.copy.is_some() {
                    client
                        .feed(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                if portal.statement.statement.local.is_some() {
                    let fields = local_fields(&portal.statement.statement);
                    if fields.is_empty() {
                        client
                            .feed(PgWireBackendMessage::NoData(NoData::new()))
                            .await?;
                    } else {
                        client.feed(row_description(&fields)).await?;
                    }
                    return Ok(());
                }
                let session = session(client)?;
                Self::check_failed(client, None)?;
                let running = self
                    .running_for(&session, &name, &portal)
                    .await
                    .map_err(|e| wire_error(&e))?;
                client.feed(row_description(&running.fields)).await?;
                session.keep_running(&name, running);
                Ok(())
            }
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(session) = session(client) {
            // Outside a transaction block Sync ends the implicit transaction: every portal.
            if client.transaction_status() == TransactionStatus::Idle {
                session.close_running(None);
                client.portal_store().clear_portals();
            } else {
                session.close_running(Some(DEFAULT_NAME));
            }
        }
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = client.transaction_status();
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => {
                if let Ok(session) = session(client) {
                    session.close_running(Some(name));
                }
                client.portal_store().rm_portal(name);
            }
            _ => {}
        }
        client
            .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        _target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(sqlstate::error(&Error::internal()))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        _target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(sqlstate::error(&Error::internal()))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_execute` is overridden: the answer streams without being collected.
        Err(sqlstate::error(&Error::internal()))
    }
}

impl Queries {
    async fn execute<C>(
        &self,
        client: &mut C,
        session: &Session,
        name: &str,
        portal: &Arc<Portal<Prepared>>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement.local {
            Some(Err(e)) => Err(sqlstate::error(e)),
            Some(Ok(locals)) => {
                Self::check_failed(client, Some(locals))?;
                for l in locals {
                    self.local(client, session, l, false).await?;
                }
                Ok(())
            }
            None if let Some(inner) = &portal.statement.statement.copy => {
                Self::check_failed(client, None)?;
                let values = bound_values(portal).map_err(|e| sqlstate::error(&e))?;
                let mut running = self
                    .start(session, inner, values, &Format::UnifiedBinary, false)
                    .await
                    .map_err(|e| wire_error(&e))?;
                self.copy_out(client, session, &mut running).await
            }
            None => {
                Self::check_failed(client, None)?;
                let mut running = self
                    .running_for(session, name, portal)
                    .await
                    .map_err(|e| wire_error(&e))?;
                match self.stream(client, session, &mut running, max_rows).await? {
                    Stopped::Suspended => {
                        client
                            .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                            .await?;
                        session.keep_running(name, running);
                    }
                    // Kept (ended) until the portal closes: another Execute returns no rows.
                    Stopped::Finished => session.keep_running(name, running),
                }
                Ok(())
            }
        }
    }
}

/// A statement's parameter types: the client's, else the warehouse's (when described), else
/// `text`.
fn parameter_types(stmt: &StoredStatement<Prepared>) -> Vec<Type> {
    (0..stmt.statement.params.max(stmt.parameter_types.len()))
        .map(|i| {
            stmt.parameter_types
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| stmt.statement.described_type(i))
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// The columns of a locally answered statement (`SHOW`, session functions); none otherwise.
fn local_fields(p: &Prepared) -> Vec<FieldInfo> {
    match &p.local {
        Some(Ok(l)) => match l.last() {
            Some(Local::Show(name)) => vec![text_field(name)],
            Some(Local::Functions(cols)) => cols.iter().map(|(n, _)| text_field(n)).collect(),
            _ => vec![],
        },
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_counted_from_tokens() {
        assert_eq!(placeholders("SELECT * FROM t WHERE a = $1 AND b = $3"), 3);
        assert_eq!(placeholders("SELECT '$1', \"$2\" -- $9\n FROM t"), 0);
        assert_eq!(placeholders("SELECT 1"), 0);
    }
}
