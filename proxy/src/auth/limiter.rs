//! Limits on failed authentications, per client address and per principal (a service client
//! id or an API key id: the identities whose secrets could be guessed). A fixed window per key.
//!
//! An address that has failed `max` times in the current window is refused — before any
//! verification — until the window ends. A principal's limit is counted per (principal,
//! address) and applies to failures only: the right secret is never refused because someone
//! (anywhere) guessed wrong, so nobody can lock a customer's backend out by naming its client
//! id; a wrong guess over the limit is answered `too_many_failures` instead of
//! `invalid_client`. (The secrets are 256-bit random values: the limit curbs noise, not luck.)
//! Memory is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::principal::AuthError;
use crate::config::RateLimitConfig;

/// Keys tracked per map; past this, expired windows are dropped, then everything (a flood of
/// distinct keys must not grow memory without bound).
const MAX_TRACKED_KEYS: usize = 100_000;

struct Window {
    started: Instant,
    failures: u32,
}

struct Counter {
    max: u32,
    window: Duration,
    keys: Mutex<HashMap<String, Window>>,
}

impl Counter {
    fn new(max: u32, window: Duration) -> Self {
        Counter {
            max,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &str) -> Result<(), AuthError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(key) {
            Some(w) if w.failures >= self.max => {
                let left = self.window.saturating_sub(w.started.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(AuthError::TooManyFailures {
                        retry_after_secs: left.as_secs().max(1),
                    })
                }
            }
            _ => Ok(()),
        }
    }

    fn fail(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if keys.len() >= MAX_TRACKED_KEYS && !keys.contains_key(key) {
            let window = self.window;
            keys.retain(|_, w| now.duration_since(w.started) < window);
            if keys.len() >= MAX_TRACKED_KEYS {
                keys.clear();
            }
        }
        let w = keys.entry(key.to_string()).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= self.window {
            w.started = now;
            w.failures = 0;
        }
        w.failures = w.failures.saturating_add(1);
    }
}

/// Failure counters per client address and per principal.
pub struct FailureLimiter {
    by_addr: Counter,
    by_principal: Counter,
}

impl FailureLimiter {
    /// Limits from the configuration.
    pub fn new(config: &RateLimitConfig) -> Self {
        let window = Duration::from_secs(config.window_secs);
        FailureLimiter {
            by_addr: Counter::new(config.max_failures_per_addr, window),
            by_principal: Counter::new(config.max_failures_per_principal, window),
        }
    }

    /// Refuses an address over its limit.
    pub fn check_addr(&self, addr: Option<IpAddr>) -> Result<(), AuthError> {
        match addr {
            Some(a) => self.by_addr.check(&a.to_string()),
            None => Ok(()),
        }
    }

    /// Counts a failure from an address.
    pub fn fail_addr(&self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.by_addr.fail(&a.to_string());
        }
    }

    /// Counts a failed attempt at a principal's secret from `addr`, and answers it: `failed`,
    /// or `too_many_failures` once that address has failed that principal too often. Never
    /// consulted for a credential that verified.
    pub fn fail_principal(&self, key: &str, addr: Option<IpAddr>, failed: AuthError) -> AuthError {
        let key = match addr {
            Some(a) => format!("{key}|{a}"),
            None => key.to_string(),
        };
        self.by_principal.fail(&key);
        match self.by_principal.check(&key) {
            Err(limited) => limited,
            Ok(()) => failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_after_max_failures_and_others_are_not() {
        let c = Counter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(c.check("a").is_ok());
            c.fail("a");
        }
        assert!(matches!(
            c.check("a"),
            Err(AuthError::TooManyFailures { retry_after_secs }) if retry_after_secs >= 1
        ));
        assert!(c.check("b").is_ok());
    }

    #[test]
    fn a_principal_is_limited_per_address_and_only_its_failures() {
        let l = FailureLimiter::new(&RateLimitConfig {
            window_secs: 60,
            max_failures_per_addr: 100,
            max_failures_per_principal: 2,
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let code = |e: AuthError| e.code();
        assert_eq!(
            code(l.fail_principal("client:x", Some(a), AuthError::InvalidClient)),
            "invalid_client"
        );
        assert_eq!(
            code(l.fail_principal("client:x", Some(a), AuthError::InvalidClient)),
            "too_many_failures"
        );
        // Another address naming the same client is counted on its own.
        assert_eq!(
            code(l.fail_principal("client:x", Some(b), AuthError::InvalidClient)),
            "invalid_client"
        );
    }

    #[test]
    fn the_window_moves_on() {
        let c = Counter::new(1, Duration::from_millis(30));
        c.fail("a");
        assert!(c.check("a").is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.check("a").is_ok());
        c.fail("a");
        assert!(c.check("a").is_err());
    }
}
