//! Connect flows in progress: the authorization-code flows users start to connect their own
//! warehouse account, by their `state`, each with its PKCE verifier and owner.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::store::Owner;

/// Time a browser has to come back from the authorization server.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Most connect flows pending at once.
const MAX_PENDING: usize = 10_000;

/// One flow.
pub struct Pending {
    /// Whose credential it connects.
    pub owner: Owner,
    /// The PKCE verifier.
    pub verifier: String,
    /// When it started.
    pub started: Instant,
}

/// Connect flows in progress, by state.
#[derive(Default)]
pub struct PendingFlows(Mutex<HashMap<String, Pending>>);

impl PendingFlows {
    /// Remembers a flow (beyond the bound, expired ones are dropped, then all).
    pub fn put(&self, state: String, p: Pending) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_PENDING {
            m.retain(|_, p| p.started.elapsed() < FLOW_TTL);
            if m.len() >= MAX_PENDING {
                m.clear();
            }
        }
        m.insert(state, p);
    }

    /// Takes a flow back, if it is still live.
    pub fn take(&self, state: &str) -> Option<Pending> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(state).filter(|p| p.started.elapsed() < FLOW_TTL)
    }
}
