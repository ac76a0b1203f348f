//! SSO for internal users: the OIDC authorization code flow with PKCE, state and nonce.
//!
//! `GET /v1/auth/oidc/login[?return_to=/path]` sends the browser to the provider with a fresh
//! state, nonce and PKCE challenge (the state is also set in a short-lived cookie, binding the
//! flow to the browser that started it). `GET /v1/auth/oidc/callback` checks the state against
//! the cookie and the pending flow, exchanges the code (with the PKCE verifier, via the `oauth2`
//! crate), validates the id_token — signature against the provider's JWKS, `iss`, `aud`, `azp`,
//! `exp`, `nonce` — maps its claims (user, groups → roles, tenant) to a principal and starts a
//! session. The provider's endpoints come from its discovery document.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RedirectUrl,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::jwks::Jwks;
use super::principal::{AuthError, AuthMethod, Principal, valid_name};
use crate::config::OidcConfig;
use crate::error::{Error, Kind};

/// Time a browser has to come back from the provider.
pub(crate) const FLOW_TTL: Duration = Duration::from_secs(600);
/// Most login flows pending at once; past it new logins wait (pending ones are never dropped
/// early, so a flood cannot void logins in progress).
const MAX_PENDING: usize = 10_000;
/// Most login flows pending from one client address.
const MAX_PENDING_PER_ADDR: usize = 20;
/// Time allowed for each call to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document accepted.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Name of the cookie binding a login flow to its browser.
pub(crate) const STATE_COOKIE: &str = "sluice_oidc_state";
/// Clock leeway for id_token times.
const LEEWAY_SECS: u64 = 60;
/// JWKS cache lifetime and refetch floor.
const JWKS_TTL: Duration = Duration::from_secs(600);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// The token endpoint's answer: the standard fields and the id_token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    /// The OIDC id_token.
    #[serde(default)]
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenField {}

/// Token response with an id_token.
pub type OidcTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OidcClient = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

pub(crate) struct Provider {
    pub(crate) client: OidcClient,
    jwks: Jwks,
}

pub(crate) struct Pending {
    pub(crate) verifier: String,
    pub(crate) nonce: String,
    pub(crate) return_to: String,
    pub(crate) started: Instant,
    /// Who started it (login starts are bounded per address).
    pub(crate) addr: Option<std::net::IpAddr>,
}

/// The configured provider and the flows in progress.
pub struct Oidc {
    pub(crate) config: OidcConfig,
    client_secret: String,
    pub(crate) http: reqwest::Client,
    provider: RwLock<Option<Arc<Provider>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why an SSO login failed (each a stable code).
#[derive(Debug)]
pub(crate) enum SsoError {
    Denied(String),
    State,
    Provider(String),
    IdToken(String),
    Claims(AuthError),
    Auth(AuthError),
}

impl SsoError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SsoError::Denied(_) => "sso_denied",
            SsoError::State => "invalid_state",
            SsoError::Provider(_) => "sso_provider_error",
            SsoError::IdToken(_) => "invalid_id_token",
            SsoError::Claims(e) | SsoError::Auth(e) => e.code(),
        }
    }

    pub(crate) fn api(&self) -> Error {
        match self {
            SsoError::Denied(e) => Error::new(
                Kind::Auth,
                "sso_denied",
                format!("the identity provider refused the login: {e}"),
            ),
            SsoError::State => Error::request(
                "invalid_state",
                "the login state is unknown, expired, or belongs to another browser; start again",
            ),
            SsoError::Provider(_) => Error::new(
                Kind::Unavailable,
                "sso_provider_error",
                "the identity provider could not complete the login",
            ),
            SsoError::IdToken(m) => Error::new(
                Kind::Auth,
                "invalid_id_token",
                format!("the id_token is invalid: {m}"),
            ),
            SsoError::Claims(e) | SsoError::Auth(e) => e.clone().into(),
        }
    }
}

impl Oidc {
    /// The provider of a configuration (discovery happens on first use, so the daemon starts
    /// while the provider is down).
    pub fn new(config: &OidcConfig, client_secret: String) -> Result<Oidc, String> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            // The oauth2 crate requires it: a redirect on the token endpoint is an attack.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        RedirectUrl::new(config.redirect_url.clone()).map_err(|e| format!("redirect_url: {e}"))?;
        Ok(Oidc {
            config: config.clone(),
            client_secret,
            http,
            provider: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) async fn provider(&self) -> Result<Arc<Provider>, SsoError> {
        if let Some(p) = self
            .provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(p);
        }
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| SsoError::Provider(format!("discovery: {e}")))?;
        if !resp.status().is_success() {
            return Err(SsoError::Provider(format!("discovery: {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| SsoError::Provider(format!("discovery: {e}")))?;
        if body.len() > MAX_DISCOVERY_BYTES {
            return Err(SsoError::Provider("discovery document too large".into()));
        }
        let d: Discovery = serde_json::from_slice(&body)
            .map_err(|e| SsoError::Provider(format!("discovery: {e}")))?;
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(SsoError::Provider(format!(
                "discovery names issuer {:?}, configured {:?}",
                d.issuer, self.config.issuer
            )));
        }
        let bad = |e: oauth2::url::ParseError| SsoError::Provider(format!("discovery: {e}"));
        let client = oauth2::Client::new(ClientId::new(self.config.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(d.authorization_endpoint).map_err(bad)?)
            .set_token_uri(TokenUrl::new(d.token_endpoint).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(self.config.redirect_url.clone()).map_err(bad)?);
        let jwks = Jwks::new(&d.jwks_uri, Algorithm::RS256, JWKS_TTL, JWKS_MIN_REFETCH)
            .map_err(SsoError::Provider)?;
        let provider = Arc::new(Provider { client, jwks });
        *self.provider.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&provider));
        Ok(provider)
    }

    /// Keeps a flow; false when this address, or everyone, has too many pending.
    pub(crate) fn remember(&self, state: String, pending: Pending) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, p| p.started.elapsed() < FLOW_TTL);
        let from_addr = map.values().filter(|p| p.addr == pending.addr).count();
        if map.len() >= MAX_PENDING || from_addr >= MAX_PENDING_PER_ADDR {
            return false;
        }
        map.insert(state, pending);
        true
    }

    pub(crate) fn take(&self, state: &str) -> Option<Pending> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(state).filter(|p| p.started.elapsed() < FLOW_TTL)
    }

    /// Validates an id_token and maps it to a principal.
    pub(crate) async fn principal(
        &self,
        provider: &Provider,
        id_token: &str,
        nonce: &str,
    ) -> Result<Principal, SsoError> {
        let (alg, kid) = super::jwt::header_alg(id_token).map_err(SsoError::Claims)?;
        if alg != "RS256" {
            return Err(SsoError::IdToken(format!("algorithm {alg} is not RS256")));
        }
        let key = provider
            .jwks
            .key(kid.as_deref())
            .await
            .map_err(SsoError::Claims)?;
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.set_audience(&[self.config.client_id.as_str()]);
        v.set_issuer(&[
            self.config.issuer.as_str(),
            self.config.issuer.trim_end_matches('/'),
        ]);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &v)
            .map_err(|e| SsoError::IdToken(e.to_string()))?;
        let claims = data.claims;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(SsoError::IdToken("nonce does not match".into()));
        }
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(self.config.client_id.as_str())
        {
            return Err(SsoError::IdToken("azp is not this client".into()));
        }
        let string = |name: &str| match claims.get(name) {
            Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
            _ => Err(SsoError::Claims(AuthError::BadClaims(format!(
                "{name} must be a non-empty string"
            )))),
        };
        let user = string(&self.config.user_claim)?;
        let tenant = match (&self.config.tenant, &self.config.tenant_claim) {
            (Some(t), _) => t.clone(),
            (None, Some(c)) => string(c)?,
            (None, None) => return Err(SsoError::Claims(AuthError::BadClaims("tenant".into()))),
        };
        let groups = super::jwt::groups_claim(&claims, &self.config.groups_claim)
            .map_err(SsoError::Claims)?;
        Ok(Principal {
            user,
            tenant,
            groups,
            attributes: Default::default(),
            method: AuthMethod::OidcSession,
            session_id: None,
        })
    }
}

/// A safe place to send the browser after login: a path on sluice, never another site.
pub(crate) fn safe_return_to(r: Option<&str>, default: &str) -> String {
    match r {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 1024
                && !p.chars().any(char::is_control) =>
        {
            p.to_string()
        }
        _ => default.to_string(),
    }
}

pub(crate) fn random_b64(n: usize) -> Result<String, AuthError> {
    use base64::Engine;
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).map_err(|_| AuthError::StoreUnavailable)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_logins_are_bounded_per_address_and_never_dropped_early() {
        let config = crate::config::Config::parse(
            "[auth.oidc]\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\nredirect_url = \"https://s.example/cb\"\ntenant = \"t\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let oidc = Oidc::new(
            config.auth.oidc.as_ref().unwrap_or_else(|| panic!()),
            "s".into(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pending = |addr: &str| Pending {
            verifier: String::new(),
            nonce: String::new(),
            return_to: "/".into(),
            started: Instant::now(),
            addr: addr.parse().ok(),
        };
        for i in 0..MAX_PENDING_PER_ADDR {
            assert!(oidc.remember(format!("a{i}"), pending("10.0.0.1")));
        }
        assert!(!oidc.remember("a-extra".into(), pending("10.0.0.1")));
        // Another address still gets in, and the first flows are all still there.
        assert!(oidc.remember("b".into(), pending("10.0.0.2")));
        assert!(oidc.take("a0").is_some());
    }

    #[test]
    fn return_to_stays_on_sluice() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
        ] {
            assert_eq!(safe_return_to(Some(bad), "/"), "/", "{bad}");
        }
        assert_eq!(safe_return_to(Some("/app?x=1"), "/"), "/app?x=1");
        assert_eq!(safe_return_to(None, "/home"), "/home");
    }
}
