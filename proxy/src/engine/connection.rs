//! Declared connections, and the one place that decides whose credential a statement reaches a
//! warehouse with: the caller's own (from the vault), the caller's database role (passthrough),
//! or, only for connections declared `credential = "service"`, the connection's own login.
//! Never the service login for a per-user connection, never anyone else's credential.

use std::sync::Arc;

use sluice_audit::AuditLog;
use sluice_connectors::{Connector, ConnectorError, Param, ParamValue, UserCredential};
use sluice_policy::BindParam;

use crate::auth::principal::Principal;
use crate::config::CredentialMode;
use crate::error::{Error, Kind};
use crate::vault::store::Secret;
use crate::vault::{Vault, owner, reauth_required};

/// One declared warehouse connection.
pub struct Connection {
    /// Its id.
    pub id: String,
    /// How to reach it.
    pub connector: Arc<dyn Connector>,
    /// Whose credential reaches the warehouse.
    pub credential: CredentialMode,
}

/// The credential one query runs with at one connection, chosen once by [`RunAs::choose`];
/// owned, so a federated source's task can hold it.
#[derive(Clone)]
pub struct RunAs {
    mode: CredentialMode,
    connection: String,
    principal: Arc<Principal>,
    secret: Option<Arc<Secret>>,
    /// The database role of a passthrough connection (`<tenant>.<user>`).
    role: String,
}

impl RunAs {
    /// The caller's credential for `conn`: from the vault for per-user connections (refused
    /// with `reauth_required` when there is none for this mode), the caller's role for
    /// passthrough, nothing for service connections.
    pub async fn choose(
        vault: Option<&Vault>,
        audit: &AuditLog,
        conn: &Connection,
        principal: &Arc<Principal>,
    ) -> Result<RunAs, Error> {
        let secret = match conn.credential {
            CredentialMode::Service | CredentialMode::Passthrough => None,
            CredentialMode::Oauth | CredentialMode::Password => {
                let vault = vault.ok_or_else(Error::internal)?;
                let secret = vault
                    .credential(&owner(principal, &conn.id), audit)
                    .await
                    .map_err(|a| a.error(&conn.id))?;
                Some(Arc::new(secret))
            }
        };
        let run_as = RunAs {
            mode: conn.credential,
            connection: conn.id.clone(),
            principal: Arc::clone(principal),
            secret,
            role: passthrough_role(conn.credential, principal)?,
        };
        // A per-user connection whose record lacks this mode's secret (the mode changed).
        run_as.credential()?;
        Ok(run_as)
    }

    /// The form the connector takes: `None` only for a service connection.
    pub fn credential(&self) -> Result<Option<UserCredential<'_>>, Error> {
        let user = self.principal.user.as_str();
        let secret = self.secret.as_deref();
        let credential = match (self.mode, secret) {
            (CredentialMode::Service, _) => return Ok(None),
            (CredentialMode::Passthrough, _) => Some(UserCredential::Passthrough {
                role: &self.role,
                tenant: &self.principal.tenant,
            }),
            (CredentialMode::Oauth, Some(s)) => {
                s.access_token.as_deref().map(UserCredential::Bearer)
            }
            (CredentialMode::Password, Some(s)) => s
                .password
                .as_deref()
                .map(|password| UserCredential::Password { user, password }),
            _ => None,
        };
        // Never the connection's own login instead.
        credential
            .map(Some)
            .ok_or_else(|| reauth_required(&self.connection))
    }

    /// Whether a refused token may be refreshed and the statement retried (OAuth only).
    pub fn refreshable(&self) -> bool {
        self.mode == CredentialMode::Oauth
    }

    /// The caller's token, refreshed now (the warehouse refused the one it had).
    pub async fn refresh(&mut self, vault: Option<&Vault>, audit: &AuditLog) -> Result<(), Error> {
        let vault = vault.ok_or_else(Error::internal)?;
        let secret = vault
            .force_refresh(&owner(&self.principal, &self.connection), audit)
            .await
            .map_err(|a| a.error(&self.connection))?;
        self.secret = Some(Arc::new(secret));
        Ok(())
    }
}

/// The database role a passthrough query acts as: `<tenant>.<user>`, so a user id can only
/// ever reach a role of its own tenant (a service client scoped to one tenant cannot mint a
/// ticket that acts as another tenant's role). Tenants with a `.` are refused, which keeps the
/// mapping one-to-one.
fn passthrough_role(mode: CredentialMode, principal: &Principal) -> Result<String, Error> {
    if mode != CredentialMode::Passthrough {
        return Ok(String::new());
    }
    if principal.tenant.contains('.') {
        return Err(Error::new(
            Kind::Forbidden,
            "invalid_tenant",
            "passthrough connections need tenant ids without '.'",
        ));
    }
    Ok(format!("{}.{}", principal.tenant, principal.user))
}

/// The policy's bind parameters as the connector takes them: the tenant and text attributes
/// bound strictly, integers as integers, lists as arrays (PostgreSQL).
pub fn bind(params: &[BindParam]) -> Vec<Param> {
    use sluice_policy::BoundValue as B;
    params
        .iter()
        .map(|p| Param {
            name: p.name.clone(),
            value: match &p.value {
                B::Tenant(s) => ParamValue::Tenant(s.clone()),
                B::Text(s) => ParamValue::Attribute(s.clone()),
                B::Integer(i) => ParamValue::Int(*i),
                B::TextList(l) => ParamValue::TextList(l.clone()),
                B::IntegerList(l) => ParamValue::IntList(l.clone()),
            },
        })
        .collect()
}

/// A warehouse failure → the caller's error (the warehouse's text goes to the audit log only).
pub fn warehouse_error(e: &ConnectorError) -> Error {
    tracing::warn!(kind = e.kind(), error = %e.log_message(), "warehouse error");
    match e {
        ConnectorError::Plan(_) => Error::request("invalid_query", e.client_message()),
        ConnectorError::Parameter(_) => Error::request("invalid_parameter", e.client_message()),
        ConnectorError::Unavailable(_) => {
            Error::new(Kind::Warehouse, "warehouse_unavailable", e.client_message())
        }
        ConnectorError::ResourceExhausted(_) => {
            Error::new(Kind::Warehouse, "resource_exhausted", e.client_message())
        }
        _ => {
            let mut err = Error::new(Kind::Warehouse, "warehouse_error", e.client_message());
            let extra = err.extra_mut();
            extra.warehouse_code = e.warehouse_code().map(str::to_string);
            extra.audit_detail = Some(e.to_string());
            err
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::principal::AuthMethod;

    fn principal(tenant: &str) -> Principal {
        Principal {
            user: "alice".into(),
            tenant: tenant.into(),
            groups: vec![],
            attributes: Default::default(),
            method: AuthMethod::Jwt,
            session_id: None,
        }
    }

    #[test]
    fn passthrough_roles_carry_the_tenant_and_stay_one_to_one() {
        assert_eq!(
            passthrough_role(CredentialMode::Passthrough, &principal("acme")).unwrap(),
            "acme.alice"
        );
        // "a.b" + "c" and "a" + "b.c" would both be "a.b.c": such tenants are refused.
        let e = passthrough_role(CredentialMode::Passthrough, &principal("a.b")).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::Forbidden, "invalid_tenant"));
        assert_eq!(
            passthrough_role(CredentialMode::Service, &principal("a.b")).unwrap(),
            ""
        );
    }

    #[test]
    fn a_per_user_connection_without_its_secret_never_falls_back_to_the_service_login() {
        let p = Arc::new(principal("acme"));
        for mode in [CredentialMode::Oauth, CredentialMode::Password] {
            let run_as = RunAs {
                mode,
                connection: "wh".into(),
                principal: Arc::clone(&p),
                secret: None,
                role: String::new(),
            };
            let e = run_as.credential().err().unwrap();
            assert_eq!(e.code, "reauth_required");
        }
        let service = RunAs {
            mode: CredentialMode::Service,
            connection: "wh".into(),
            principal: p,
            secret: None,
            role: String::new(),
        };
        assert!(service.credential().unwrap().is_none());
    }
}
