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
/// Most connect flows one user may have pending at once (one per tab they might open).
pub const MAX_PENDING_PER_USER: usize = 10;

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

/// Why a flow could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooMany {
    /// This user has [`MAX_PENDING_PER_USER`] flows in progress.
    User,
    /// [`MAX_PENDING`] flows are in progress.
    All,
}

impl PendingFlows {
    /// Remembers a flow. Expired flows make room first; a user with too many flows in progress,
    /// or a full table, is refused: one user never pushes out another's flow.
    pub fn put(&self, state: String, p: Pending) -> Result<(), TooMany> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let same_user =
            |q: &Pending| q.owner.tenant == p.owner.tenant && q.owner.user == p.owner.user;
        if m.len() >= MAX_PENDING
            || m.values().filter(|q| same_user(q)).count() >= MAX_PENDING_PER_USER
        {
            m.retain(|_, q| q.started.elapsed() < FLOW_TTL);
        }
        if m.values().filter(|q| same_user(q)).count() >= MAX_PENDING_PER_USER {
            return Err(TooMany::User);
        }
        if m.len() >= MAX_PENDING {
            return Err(TooMany::All);
        }
        m.insert(state, p);
        Ok(())
    }

    /// Takes a flow back, if it is still live.
    pub fn take(&self, state: &str) -> Option<Pending> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(state).filter(|p| p.started.elapsed() < FLOW_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(user: &str) -> Pending {
        Pending {
            owner: Owner {
                tenant: "t".into(),
                user: user.into(),
                connection: "c".into(),
            },
            verifier: String::new(),
            started: Instant::now(),
        }
    }

    #[test]
    fn one_user_cannot_push_out_another_users_flow() {
        let flows = PendingFlows::default();
        assert_eq!(flows.put("alice".into(), flow("alice")), Ok(()));
        for i in 0..MAX_PENDING_PER_USER {
            assert_eq!(flows.put(format!("m{i}"), flow("mallory")), Ok(()));
        }
        for i in 0..1_000 {
            assert_eq!(
                flows.put(format!("x{i}"), flow("mallory")),
                Err(TooMany::User)
            );
        }
        assert!(flows.take("alice").is_some(), "alice's flow is still there");
        assert!(flows.take("m0").is_some());
        // A taken flow frees its place.
        assert_eq!(flows.put("again".into(), flow("mallory")), Ok(()));
    }
}
