//! A cached JSON Web Key Set, fetched over HTTP.
//!
//! Keys are served from memory. The set is fetched again when it is older than its TTL, or
//! when a token names a `kid` it does not hold (key rotation at the issuer). Fetches are
//! single-flight (one request at a time; waiters reuse its result) and rate-limited (at most one
//! per `min_refetch`), so a flood of tokens with random `kid`s cannot stampede the issuer. When
//! a fetch fails, the keys already held keep working.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::principal::AuthError;

/// Longest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys kept from one document.
const MAX_KEYS: usize = 64;

/// The keys of one fetch.
struct KeySet {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    /// The single key of a set of one (for tokens without `kid`).
    only: Option<Arc<DecodingKey>>,
    fetched: Instant,
}

/// A JWKS URL and the keys last fetched from it.
pub struct Jwks {
    url: String,
    algorithm: Algorithm,
    client: reqwest::Client,
    ttl: Duration,
    min_refetch: Duration,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching (single flight); holds the time of the last fetch attempt.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// A cache for `url`, keeping only keys usable with `algorithm`.
    pub fn new(
        url: &str,
        algorithm: Algorithm,
        ttl: Duration,
        min_refetch: Duration,
    ) -> Result<Jwks, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Jwks {
            url: url.to_string(),
            algorithm,
            client,
            ttl,
            min_refetch,
            keys: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pick(set: &KeySet, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        match kid {
            Some(k) => set.by_kid.get(k).cloned(),
            None => set.only.clone(),
        }
    }

    /// Whether `key` is in the set as last fetched, and that set is fresh (within its TTL).
    pub fn holds(&self, key: &Arc<DecodingKey>) -> bool {
        self.current().is_some_and(|set| {
            set.fetched.elapsed() < self.ttl
                && (set.by_kid.values().any(|k| Arc::ptr_eq(k, key))
                    || set.only.as_ref().is_some_and(|k| Arc::ptr_eq(k, key)))
        })
    }

    /// The key for a token's `kid` (or the only key, for a token without one).
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, AuthError> {
        let held = self.current();
        if let Some(set) = &held
            && set.fetched.elapsed() < self.ttl
            && let Some(k) = Self::pick(set, kid)
        {
            return Ok(k);
        }
        // Stale, unknown kid, or nothing yet: one fetch at a time.
        let mut last_attempt = self.fetch.lock().await;
        // Someone else may have fetched while we waited.
        if let Some(set) = self.current()
            && !held
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(h, &set) && set.fetched.elapsed() >= self.ttl)
            && let Some(k) = Self::pick(&set, kid)
        {
            return Ok(k);
        }
        let may_fetch = last_attempt.is_none_or(|t| t.elapsed() >= self.min_refetch);
        if may_fetch {
            *last_attempt = Some(Instant::now());
            match self.fetch_set().await {
                Ok(set) => {
                    let set = Arc::new(set);
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&set));
                    return Self::pick(&set, kid).ok_or(AuthError::UnknownKid);
                }
                Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed"),
            }
        }
        // No fresh fetch: a stale key still beats refusing every caller.
        match self.current() {
            Some(set) => Self::pick(&set, kid).ok_or(AuthError::UnknownKid),
            None => Err(AuthError::KeysUnavailable),
        }
    }

    async fn fetch_set(&self) -> Result<KeySet, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS document too large".into());
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("JWKS document too large".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut by_kid = HashMap::new();
        let mut usable = Vec::new();
        for jwk in set.keys.iter().take(MAX_KEYS) {
            if !fits(jwk, self.algorithm) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let key = Arc::new(key);
            if let Some(kid) = &jwk.common.key_id {
                by_kid.insert(kid.clone(), Arc::clone(&key));
            }
            usable.push(key);
        }
        let only = (usable.len() == 1).then(|| Arc::clone(&usable[0]));
        Ok(KeySet {
            by_kid,
            only,
            fetched: Instant::now(),
        })
    }
}

/// Whether a JWK can verify `algorithm` (its family, curve, and declared `alg` if any).
fn fits(jwk: &Jwk, algorithm: Algorithm) -> bool {
    if let Some(alg) = jwk.common.key_algorithm
        && format!("{alg:?}") != format!("{algorithm:?}")
    {
        return false;
    }
    match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(keys: &[(&str, &Arc<DecodingKey>)], age: Duration) -> Option<Arc<KeySet>> {
        Some(Arc::new(KeySet {
            by_kid: keys
                .iter()
                .map(|(kid, k)| (kid.to_string(), Arc::clone(k)))
                .collect(),
            only: None,
            fetched: Instant::now().checked_sub(age).unwrap(),
        }))
    }

    #[test]
    fn a_held_key_holds_only_while_it_is_in_the_fresh_set() {
        let jwks = Jwks::new(
            "http://127.0.0.1:9/jwks.json",
            Algorithm::ES256,
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .unwrap();
        let key = Arc::new(DecodingKey::from_secret(b"k"));
        // The same bytes, another fetch: not the key that verified the token.
        let refetched = Arc::new(DecodingKey::from_secret(b"k"));
        assert!(!jwks.holds(&key), "nothing fetched yet");
        *jwks.keys.write().unwrap() = set(&[("a", &key)], Duration::ZERO);
        assert!(jwks.holds(&key));
        assert!(!jwks.holds(&refetched));
        // Past its TTL the set is fetched again by a full verification: nothing holds.
        *jwks.keys.write().unwrap() = set(&[("a", &key)], Duration::from_secs(61));
        assert!(!jwks.holds(&key));
        // Rotated out at the issuer.
        *jwks.keys.write().unwrap() = set(&[("b", &refetched)], Duration::ZERO);
        assert!(!jwks.holds(&key));
    }
}
