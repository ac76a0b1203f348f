//! Startup and authentication of a wire connection.
//!
//! - Off loopback, TLS is required (`[pgwire] require_tls`): a client that did not negotiate
//!   it is refused (`28000`) before it is asked for a password, so no credential crosses the
//!   network in cleartext.
//! - The password is a data credential sluice already accepts (a signed JWT, a session token,
//!   an API key), asked for with AuthenticationCleartextPassword; SCRAM needs a secret sluice
//!   would have to store, which a bearer credential is not.
//! - The user name must be the credential's user, or empty.
//! - The database names the connection (`[[connections]] id`); `sluice`, `postgres`, the
//!   user's own name (libpq's default) or an empty one select the default routing.
//! - Wrong credentials: `28P01` (FATAL), counted by the same failure limits as HTTP and
//!   recorded as `auth_denied` with `front_door = pgwire`. A successful login is recorded as
//!   an `auth_event` (`pgwire_login`).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo as PgClientInfo, METADATA_APPLICATION_NAME, METADATA_DATABASE, METADATA_USER,
    PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sluice_audit::{AuditRecord, Decision, Event};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Credential;
use crate::auth::principal::ClientInfo;
use crate::context::REQUEST_ID;
use crate::error::{Error, Kind};
use crate::wire::query::Session;
use crate::wire::session::{CancelSlot, Cancels};
use crate::wire::sqlstate::fatal;

/// Longest application name kept (as HTTP's user agent).
const MAX_APPLICATION_NAME: usize = 256;

/// Database names that select the default routing.
const DEFAULT_DATABASES: &[&str] = &["", "sluice", "postgres"];

/// One connection's startup handler (it carries the connection's cancel slot).
pub struct Startup {
    state: Arc<AppState>,
    cancels: Arc<Cancels>,
    slot: Arc<CancelSlot>,
    keys: RandomPidSecretKeyGenerator,
}

impl Startup {
    /// The handler of one accepted connection.
    pub fn new(state: Arc<AppState>, cancels: Arc<Cancels>, slot: Arc<CancelSlot>) -> Startup {
        Startup {
            state,
            cancels,
            slot,
            keys: RandomPidSecretKeyGenerator::default(),
        }
    }
}

/// The ParameterStatus messages sent after authentication.
struct Parameters<'a> {
    user: &'a str,
}

impl ServerParameterProvider for Parameters<'_> {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: PgClientInfo,
    {
        let mut p: HashMap<String, String> = crate::wire::local::defaults()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(app) = client.metadata().get(METADATA_APPLICATION_NAME) {
            p.insert("application_name".into(), app.clone());
        }
        p.insert("session_authorization".into(), self.user.to_string());
        Some(p)
    }
}

fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The client as the audit log and rate limits see it.
pub(crate) fn client_info<C: PgClientInfo>(client: &C) -> ClientInfo {
    ClientInfo {
        addr: Some(client.socket_addr().ip()),
        user_agent: client
            .metadata()
            .get(METADATA_APPLICATION_NAME)
            .filter(|s| !s.is_empty())
            .map(|s| truncated(s, MAX_APPLICATION_NAME)),
        front_door: Some(crate::wire::session::FRONT_DOOR),
    }
}

fn tls_required() -> Error {
    Error::new(
        Kind::Auth,
        "tls_required",
        "sluice requires TLS on this listener: connect with sslmode=require",
    )
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: PgClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.state.config.pgwire.requires_tls() && !client.is_secure() {
                    let e = tls_required();
                    let info = client_info(client);
                    let user = client.metadata().get(METADATA_USER).cloned();
                    REQUEST_ID
                        .scope(Uuid::new_v4().to_string(), async {
                            self.audit_denied(&info, user.as_deref(), e.code).await;
                        })
                        .await;
                    return Err(fatal(&e));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let password = zeroize::Zeroizing::new(pwd.into_password()?.password);
                let request_id = Uuid::new_v4().to_string();
                let login = REQUEST_ID
                    .scope(request_id, self.login(client, &password))
                    .await?;
                let (pid, secret) = self.keys.generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                let user = login.user.clone();
                let session = Session {
                    credential: password,
                    claimed_user: login.claimed,
                    user: login.user,
                    database: login.database,
                    connection: login.connection,
                    client: login.client,
                    pid,
                    cancel: Arc::clone(&self.slot),
                    _registration: self.cancels.register(pid, &secret, &self.slot),
                    settings: Default::default(),
                    running: Default::default(),
                    catalog: Default::default(),
                    savepoints: Default::default(),
                    held: std::sync::Mutex::new(login.held),
                };
                client.session_extensions().insert::<Session>(session);
                finish_authentication(client, &Parameters { user: &user }).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Startup {
    /// Verifies the password and resolves the database.
    async fn login<C: PgClientInfo + Sync>(
        &self,
        client: &C,
        password: &str,
    ) -> PgWireResult<Login> {
        let info = client_info(client);
        let claimed = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let database = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_default();
        let credential = Credential::Password {
            user: &claimed,
            password,
        };
        let (principal, held) = match self
            .state
            .auth
            .authenticate_to_hold(credential, &info)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.audit_denied(&info, Some(&claimed), e.code()).await;
                return Err(fatal(&Error::from(e)));
            }
        };
        let connection = if DEFAULT_DATABASES.contains(&database.as_str())
            || database == claimed
            || database == principal.user
        {
            None
        } else if self.state.engine.connections().contains_key(&database) {
            Some(database.clone())
        } else {
            let e = Error::new(
                Kind::Request,
                "unknown_database",
                format!(
                    "database \"{database}\" does not exist: the database names a sluice \
                     connection"
                ),
            );
            self.audit_denied(&info, Some(&principal.user), e.code)
                .await;
            return Err(fatal(&e));
        };
        let mut r = AuditRecord::new(
            Event::AuthEvent,
            crate::context::current_request_id(),
            Decision::Allow,
        );
        r.code = Some("pgwire_login".into());
        r.user = Some(principal.user.clone());
        r.tenant = Some(principal.tenant.clone());
        r.groups = principal.groups.clone();
        r.session_id = principal.session_id.clone();
        r.auth_method = Some(principal.method.as_str().to_string());
        r.client_addr = info.addr.map(|a| a.to_string());
        r.user_agent = info.user_agent.clone();
        r.connection = connection.clone();
        r.front_door = Some(crate::wire::session::FRONT_DOOR.into());
        if let Err(e) = self.state.audit.append(r).await {
            tracing::error!(error = %e, "pgwire: the login record could not be written");
            return Err(fatal(&Error::audit_unavailable()));
        }
        Ok(Login {
            held,
            claimed,
            user: principal.user,
            database,
            connection,
            client: info,
        })
    }

    async fn audit_denied(&self, info: &ClientInfo, user: Option<&str>, code: &str) {
        let mut r = AuditRecord::new(
            Event::AuthDenied,
            crate::context::current_request_id(),
            Decision::Deny,
        );
        r.code = Some(code.to_string());
        r.user = user.filter(|u| !u.is_empty()).map(str::to_string);
        r.auth_method = Some("password".into());
        r.client_addr = info.addr.map(|a| a.to_string());
        r.user_agent = info.user_agent.clone();
        r.front_door = Some(crate::wire::session::FRONT_DOOR.into());
        tracing::info!(code, "pgwire: authentication refused");
        if let Err(e) = self.state.audit.append(r).await {
            tracing::error!(error = %e, "pgwire: the denial record could not be written");
        }
    }
}

/// A verified login.
struct Login {
    /// The verified credential, kept for the session's statements.
    held: Option<crate::auth::Held>,
    claimed: String,
    user: String,
    database: String,
    connection: Option<String>,
    client: ClientInfo,
}
