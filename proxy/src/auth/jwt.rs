//! Customer-signed JWTs: HS256 with a shared secret, or RS256 / ES256 / EdDSA with a static
//! public key or a JWKS URL. The algorithm is fixed by configuration and never taken from the
//! token (`alg: none`, or an RS256 public key presented as an HS256 secret, are refused before
//! any key is touched). `exp`, `nbf`, `iat`, `aud` and `iss` are checked with a bounded leeway;
//! an optional `jti` store refuses replays.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::Jwks;
use super::principal::{AuthError, AuthMethod, MAX_ATTRIBUTES, MAX_GROUPS, Principal, valid_name};
use super::store::AuthStore;
use crate::config::{ClaimsConfig, JwtAlgorithm, JwtConfig, MIN_HS256_SECRET_BYTES};
use sluice_policy::{AttributeType, AttributeValue};

/// Where verification keys come from.
pub enum KeySource {
    /// One key (HS256 secret or a PEM public key).
    Static(DecodingKey),
    /// A JWKS URL.
    Jwks(Jwks),
}

/// How long a token's verification holds for a connection that keeps the token (the wire
/// door verifies it once per connection, not once per statement): the token's own deadline
/// (`exp`, and `iat + max_age_secs`, with the leeway), and the key-set key that verified it.
/// A token's claims cannot change, so within these bounds a new verification would map it to
/// the same principal; a `jti` is remembered once, by the first verification.
#[derive(Clone)]
pub struct Reuse {
    until: i64,
    key: Option<Arc<DecodingKey>>,
}

/// Verifies customer-signed tokens.
pub struct JwtVerifier {
    keys: KeySource,
    validation: Validation,
    claims: ClaimsConfig,
    /// The declared type of each attribute claim (`[auth.attributes]`).
    attribute_types: BTreeMap<String, AttributeType>,
    max_age_secs: Option<u64>,
    require_jti: bool,
}

/// The `jsonwebtoken` algorithm of a configured one.
pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl JwtVerifier {
    /// Builds a verifier from the config; `secret` is the HS256 secret, `pem` the public key
    /// file's contents (whichever the config names).
    pub fn new(
        config: &JwtConfig,
        secret: Option<&[u8]>,
        pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        let alg = algorithm(config.algorithm);
        let keys = match (config.algorithm, secret, pem, &config.jwks_url) {
            (JwtAlgorithm::HS256, Some(secret), _, _) => {
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(format!(
                        "the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
                    ));
                }
                KeySource::Static(DecodingKey::from_secret(secret))
            }
            (JwtAlgorithm::RS256, _, Some(pem), _) => KeySource::Static(
                DecodingKey::from_rsa_pem(pem).map_err(|e| format!("public key: {e}"))?,
            ),
            (JwtAlgorithm::ES256, _, Some(pem), _) => KeySource::Static(
                DecodingKey::from_ec_pem(pem).map_err(|e| format!("public key: {e}"))?,
            ),
            (JwtAlgorithm::EdDSA, _, Some(pem), _) => KeySource::Static(
                DecodingKey::from_ed_pem(pem).map_err(|e| format!("public key: {e}"))?,
            ),
            (_, _, _, Some(url)) if config.algorithm != JwtAlgorithm::HS256 => {
                KeySource::Jwks(Jwks::new(
                    url,
                    alg,
                    Duration::from_secs(config.jwks_ttl_secs),
                    Duration::from_secs(config.jwks_min_refetch_secs),
                )?)
            }
            _ => return Err("no key for the configured algorithm".into()),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_issuer(&[config.issuer.as_str()]);
        let mut required = vec!["exp", "aud", "iss"];
        if config.max_age_secs.is_some() {
            required.push("iat");
        }
        if config.require_jti {
            required.push("jti");
        }
        validation.required_spec_claims = required
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>();
        Ok(JwtVerifier {
            keys,
            validation,
            claims: config.claims.clone(),
            attribute_types: BTreeMap::new(),
            max_age_secs: config.max_age_secs,
            require_jti: config.require_jti,
        })
    }

    /// The same verifier, reading each attribute claim as its declared type.
    #[must_use]
    pub fn with_attribute_types(mut self, types: BTreeMap<String, AttributeType>) -> Self {
        self.attribute_types = types;
        self
    }

    /// Verifies a token and maps its claims to a principal. `store` remembers `jti`s when
    /// replay protection is on.
    pub async fn verify(
        &self,
        token: &str,
        store: &Arc<AuthStore>,
    ) -> Result<Principal, AuthError> {
        self.verify_for_reuse(token, store).await.map(|(p, _)| p)
    }

    /// [`JwtVerifier::verify`], and how long the verified principal may be reused by a
    /// connection that holds the token ([`Reuse`]).
    pub async fn verify_for_reuse(
        &self,
        token: &str,
        store: &Arc<AuthStore>,
    ) -> Result<(Principal, Reuse), AuthError> {
        let (alg, kid) = header_alg(token)?;
        let (claims, key) = match &self.keys {
            KeySource::Static(key) => (self.decode(token, &alg, key)?, None),
            KeySource::Jwks(jwks) => {
                // The algorithm is checked before the key set is consulted (or fetched).
                self.check_alg(&alg)?;
                let key = jwks.key(kid.as_deref()).await?;
                (self.decode(token, &alg, &key)?, Some(key))
            }
        };
        let principal = map_claims(
            &claims,
            &self.claims,
            &self.attribute_types,
            AuthMethod::Jwt,
        )?;
        let now = super::principal::unix_now();
        let leeway = self.validation.leeway as i64;
        // What `decode` checked about time, as a deadline: `exp` (with the leeway), and
        // `iat + max_age` (below). `nbf` passed already and stays passed.
        let mut until = expiry(&claims, now).saturating_add(leeway);
        if let Some(max_age) = self.max_age_secs {
            let iat = claims
                .get("iat")
                .and_then(Value::as_i64)
                .ok_or_else(|| AuthError::BadClaims("iat must be a number".into()))?;
            if iat > now + leeway {
                return Err(AuthError::NotYetValid);
            }
            if now - iat > max_age as i64 + leeway {
                return Err(AuthError::TooOld);
            }
            until = until.min(iat.saturating_add(max_age as i64).saturating_add(leeway));
        }
        if self.require_jti {
            let jti = match claims.get("jti") {
                Some(Value::String(j)) if valid_name(j) => j.clone(),
                _ => return Err(AuthError::BadClaims("jti must be a string".into())),
            };
            let exp = expiry(&claims, now) + self.validation.leeway as i64;
            let store = Arc::clone(store);
            let key = format!("{}|{jti}", principal.user);
            let fresh = tokio::task::spawn_blocking(move || store.remember_jti(&key, exp))
                .await
                .map_err(|_| AuthError::StoreUnavailable)?
                .map_err(|_| AuthError::StoreUnavailable)?;
            if !fresh {
                return Err(AuthError::Replayed);
            }
        }
        Ok((principal, Reuse { until, key }))
    }

    /// Whether a principal verified with `reuse` may still be used at `now` (unix seconds)
    /// without verifying the token again: before its deadline, and — with a key set — while
    /// the key that verified it is still in the set as last fetched (a key removed at the
    /// issuer stops its tokens at the next fetch; a stale set is fetched by a full
    /// verification instead).
    pub fn still_valid(&self, reuse: &Reuse, now: i64) -> bool {
        now < reuse.until
            && match (&self.keys, &reuse.key) {
                (KeySource::Static(_), None) => true,
                (KeySource::Jwks(jwks), Some(key)) => jwks.holds(key),
                _ => false,
            }
    }

    fn check_alg(&self, alg: &str) -> Result<(), AuthError> {
        // Parsed, not formatted: this runs on every request (`none` and unknown names fail).
        let parsed = alg.parse::<Algorithm>().ok();
        if parsed.is_some_and(|p| self.validation.algorithms.contains(&p)) {
            Ok(())
        } else {
            Err(AuthError::AlgorithmNotAllowed)
        }
    }

    fn decode(
        &self,
        token: &str,
        alg: &str,
        key: &DecodingKey,
    ) -> Result<Map<String, Value>, AuthError> {
        // The algorithm is pinned: refuse any other (including `none`) before anything else.
        self.check_alg(alg)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
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
        Ok(data.claims)
    }
}

/// Maps verified claims to a principal: user and tenant must be plain strings, groups an array
/// of strings, each attribute of its declared type (`types`; text when not declared). An
/// attribute claim of another type refuses the token (a filter must never see a value it was
/// not declared for); an absent one is absent (a filter that needs it refuses the query).
pub fn map_claims(
    claims: &Map<String, Value>,
    names: &ClaimsConfig,
    types: &BTreeMap<String, AttributeType>,
    method: AuthMethod,
) -> Result<Principal, AuthError> {
    let user = string_claim(claims, &names.user)?;
    let tenant = string_claim(claims, &names.tenant)?;
    let groups = groups_claim(claims, &names.groups)?;
    let mut attributes = BTreeMap::new();
    for name in names.attributes.iter().take(MAX_ATTRIBUTES) {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let value = attribute_value(name, v, types).map_err(AuthError::BadClaims)?;
                attributes.insert(name.clone(), value);
            }
        }
    }
    Ok(Principal {
        user,
        tenant,
        groups,
        attributes,
        method,
        session_id: None,
    })
}

/// The JSON value of attribute `name` (a claim, a ticket field, a CLI argument) as its declared
/// type (`types`; text when not declared), or why not: `"<name> must be …"`. The one reading
/// of attribute values every credential shares.
pub fn attribute_value(
    name: &str,
    v: &Value,
    types: &BTreeMap<String, AttributeType>,
) -> Result<AttributeValue, String> {
    let ty = types.get(name).copied().unwrap_or(AttributeType::Text);
    AttributeValue::from_json(v, ty).ok_or_else(|| format!("{name} must be {}", describe(ty)))
}

/// What a claim of type `ty` must hold, for error messages.
pub fn describe(ty: AttributeType) -> String {
    let (n, t) = (
        sluice_policy::MAX_ATTRIBUTE_ITEMS,
        sluice_policy::MAX_ATTRIBUTE_TEXT,
    );
    match ty {
        AttributeType::Text => format!("a string of 1 to {t} bytes without control characters"),
        AttributeType::Integer => "a 64-bit integer".into(),
        AttributeType::TextList => format!("an array of at most {n} such strings (1 to {t} bytes)"),
        AttributeType::IntegerList => format!("an array of at most {n} 64-bit integers"),
    }
}

/// An array-of-strings claim (absent or null: none).
pub fn groups_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, AuthError> {
    let bad = || AuthError::BadClaims(format!("{name} must be an array of strings"));
    match claims.get(name) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) if items.len() <= MAX_GROUPS => items
            .iter()
            .map(|g| match g {
                Value::String(s) if valid_name(s) => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// The `alg` and `kid` of a compact JWS header, read without trusting anything else in it.
pub fn header_alg(token: &str) -> Result<(String, Option<String>), AuthError> {
    use base64::Engine;
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    // RFC 7515 §4.1.11: a `crit` header names extensions the recipient must understand;
    // sluice understands none, so such a token is refused.
    if value.get("crit").is_some() {
        return Err(AuthError::Malformed);
    }
    let kid = match value.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    match value.get("alg") {
        Some(Value::String(a)) => Ok((a.clone(), kid)),
        _ => Err(AuthError::Malformed),
    }
}

/// When a token stops being valid, for remembering its `jti` that long: `exp` as an integer or
/// as a (finite) number of seconds with a fraction, rounded up — a fractional `exp` must not
/// make the replay record lapse early.
fn expiry(claims: &Map<String, Value>, now: i64) -> i64 {
    match claims.get("exp") {
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f < i64::MAX as f64)
                    .map(|f| f.ceil() as i64)
            })
            .unwrap_or(now),
        None => now,
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(AuthError::BadClaims(format!("{name} is empty or too long"))),
        Some(_) => Err(AuthError::BadClaims(format!("{name} must be a string"))),
        None => Err(AuthError::BadClaims(format!("missing {name}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(header: Value) -> String {
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.sig",
            b64(&header),
            b64(&serde_json::json!({"sub": "a"}))
        )
    }

    #[test]
    fn a_fractional_exp_keeps_the_replay_record_as_long_as_the_token() {
        let claims = |v: Value| {
            let mut m = Map::new();
            m.insert("exp".into(), v);
            m
        };
        assert_eq!(
            expiry(&claims(serde_json::json!(2_000_000_000)), 5),
            2_000_000_000
        );
        assert_eq!(
            expiry(&claims(serde_json::json!(2_000_000_000.25)), 5),
            2_000_000_001
        );
        assert_eq!(expiry(&claims(serde_json::json!("x")), 5), 5);
        assert_eq!(expiry(&Map::new(), 5), 5);
    }

    #[test]
    fn a_critical_header_extension_is_refused() {
        let ok = token(serde_json::json!({"alg": "HS256", "kid": "k"}));
        assert_eq!(
            header_alg(&ok).unwrap(),
            ("HS256".to_string(), Some("k".to_string()))
        );
        let crit = token(serde_json::json!({"alg": "HS256", "crit": ["exp"], "exp": 1}));
        assert_eq!(header_alg(&crit), Err(AuthError::Malformed));
    }
}
