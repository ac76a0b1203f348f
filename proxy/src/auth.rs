//! Authentication: every method ends in the same verified [`Principal`]. The tenant always
//! comes from a verified credential, never from the request body or the SQL.
//!
//! First method: HS256 JWT bearer tokens, algorithm pinned by configuration, with `exp`, `nbf`,
//! `aud` and `iss` checked and a bounded clock leeway.

use std::collections::HashSet;

use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{ClaimsConfig, JwtAlgorithm, JwtConfig, MIN_HS256_SECRET_BYTES};
use crate::error::ApiError;

/// Longest bearer token accepted (bytes).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id or group name accepted.
const MAX_NAME_LEN: usize = 256;
/// Most groups one principal may carry.
const MAX_GROUPS: usize = 256;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A signed JWT bearer token.
    Jwt,
}

impl AuthMethod {
    /// Stable name (audit log).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user: String,
    /// Tenant id: bound into every protected table read.
    pub tenant: String,
    /// Groups.
    pub groups: Vec<String>,
    /// How they authenticated.
    pub method: AuthMethod,
}

/// Why authentication failed; each has its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// The header or token is not well-formed.
    #[error("the bearer token is malformed")]
    Malformed,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// The token names another algorithm than the configured one.
    #[error("the token's algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// Wrong `aud`.
    #[error("the token audience is not accepted")]
    BadAudience,
    /// Wrong `iss`.
    #[error("the token issuer is not accepted")]
    BadIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("invalid token claims: {0}")]
    BadClaims(String),
}

impl AuthError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Malformed => "invalid_token",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadSignature => "invalid_signature",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::BadAudience => "invalid_audience",
            AuthError::BadIssuer => "invalid_issuer",
            AuthError::BadClaims(_) => "invalid_claims",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::unauthorized(e.code(), e.to_string())
    }
}

/// Verifies HS256 tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    claims: ClaimsConfig,
}

impl JwtVerifier {
    /// Builds a verifier from the config and the secret it names.
    pub fn new(config: &JwtConfig, secret: &[u8]) -> Result<Self, String> {
        let algorithm = match config.algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
        };
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.required_spec_claims = ["exp", "aud", "iss"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>();
        Ok(JwtVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
            claims: config.claims.clone(),
        })
    }

    /// Verifies a token and maps its claims to a principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // The algorithm is pinned: refuse any other (including `none`) before anything else.
        let alg = header_alg(token)?;
        if !self
            .validation
            .algorithms
            .iter()
            .any(|a| format!("{a:?}") == alg)
        {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::AlgorithmNotAllowed
            }
            ErrorKind::InvalidAudience => AuthError::BadAudience,
            ErrorKind::InvalidIssuer => AuthError::BadIssuer,
            ErrorKind::MissingRequiredClaim(c) => AuthError::BadClaims(format!("missing {c}")),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let user = string_claim(&claims, &self.claims.user)?;
        let tenant = string_claim(&claims, &self.claims.tenant)?;
        let groups = match claims.get(&self.claims.groups) {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) if items.len() <= MAX_GROUPS => items
                .iter()
                .map(|g| match g {
                    Value::String(s) if valid_name(s) => Ok(s.clone()),
                    _ => Err(AuthError::BadClaims(format!(
                        "{} must be an array of strings",
                        self.claims.groups
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(AuthError::BadClaims(format!(
                    "{} must be an array of strings",
                    self.claims.groups
                )));
            }
        };
        Ok(Principal {
            user,
            tenant,
            groups,
            method: AuthMethod::Jwt,
        })
    }
}

/// The `alg` of a compact JWS header, read without trusting anything else in it.
fn header_alg(token: &str) -> Result<String, AuthError> {
    use base64::Engine;
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    match value.get("alg") {
        Some(Value::String(a)) => Ok(a.clone()),
        _ => Err(AuthError::Malformed),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(AuthError::BadClaims(format!("{name} is empty or too long"))),
        Some(_) => Err(AuthError::BadClaims(format!("{name} must be a string"))),
        None => Err(AuthError::BadClaims(format!("missing {name}"))),
    }
}

/// The configured authentication methods.
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// Wraps the configured verifiers.
    pub fn new(jwt: Option<JwtVerifier>) -> Self {
        Authenticator { jwt }
    }

    /// Authenticates a request from its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(AuthError::Missing);
        };
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?
            .trim();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        match &self.jwt {
            Some(v) => v.verify(token),
            None => Err(AuthError::Malformed),
        }
    }
}
