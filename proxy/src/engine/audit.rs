//! The audit records of one query: exactly one `query_denied` record, or a `query_attempt`
//! then one `query_completion` — on every way out, including the caller going away (records
//! are written on drop). The attempt is durable before any byte of the answer leaves (and, with
//! `audit.durability = before_warehouse`, before any warehouse or source sees the query).

use std::time::Instant;

use sluice_audit::{AuditLog, AuditRecord, Decision, Event, Pending};
use sluice_policy::RewrittenQuery;

use crate::auth::principal::{ClientInfo, Principal};
use crate::engine::federation::SubQueryLog;
use crate::error::Error;

/// Longest a refusal waits for the audit log (its attempt's commit, then its own record): a
/// stalled disk must not hold the caller forever. Above the writer's lock wait (5 s), so a
/// log that is merely busy still answers.
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Collects what the audit log records about one request, so that every way out of
/// the engine writes exactly one denied record, or an attempt and a completion.
pub(crate) struct QueryAudit {
    log: AuditLog,
    pub(crate) record: AuditRecord,
    started: Instant,
    attempted: bool,
    /// The attempt, queued but maybe not yet durable ([`QueryAudit::attempt_queued`]).
    pending: Option<Pending>,
    /// Whether completions are awaited until durable (`audit.durability = before_warehouse`).
    wait_for_completion: bool,
    /// Set once the final record of this stage is handed over (to `failed` or `completion`).
    finished: bool,
}

impl QueryAudit {
    pub(crate) fn new(
        log: &AuditLog,
        request_id: &str,
        client: &ClientInfo,
        wait_for_completion: bool,
    ) -> Self {
        let mut record =
            AuditRecord::new(Event::QueryDenied, request_id.to_string(), Decision::Deny);
        record.client_addr = client.addr.map(|a| a.to_string());
        record.user_agent = client.user_agent.clone();
        record.front_door = client.front_door.map(str::to_string);
        QueryAudit {
            log: log.clone(),
            record,
            started: Instant::now(),
            attempted: false,
            pending: None,
            wait_for_completion,
            finished: false,
        }
    }

    pub(crate) fn principal(&mut self, p: &Principal) {
        self.record.user = Some(p.user.clone());
        self.record.tenant = Some(p.tenant.clone());
        self.record.groups = p.groups.clone();
        self.record.auth_method = Some(p.method.as_str().into());
        self.record.session_id = p.session_id.clone();
    }

    pub(crate) fn rewritten(&mut self, r: &RewrittenQuery, redact: Option<sluice_policy::Dialect>) {
        self.record.rewritten_sql = Some(match redact {
            Some(d) => sluice_policy::redact_literals(&r.sql, d),
            None => r.sql.clone(),
        });
        self.record.columns = r.manifest.columns.clone();
        self.record.params = crate::engine::filters::policy_params(r, redact.is_some());
        self.record.tables = r.manifest.tables.iter().map(|t| t.to_string()).collect();
        self.record.row_filters = crate::engine::filters::row_filters(r, redact.is_some());
    }

    fn attempt_record(&self) -> AuditRecord {
        let mut record = self.record.clone();
        record.event = Event::QueryAttempt;
        record.decision = Decision::Allow;
        record.ts = now();
        record
    }

    /// Commits the attempt record; refuses the query if the log cannot be written.
    pub(crate) async fn attempt(&mut self) -> Result<(), Error> {
        self.attempt_queued()?;
        self.durable().await
    }

    /// Queues the attempt record for the next group commit, without waiting for it to be
    /// durable ([`QueryAudit::durable`] waits); refuses the query if it cannot be queued.
    pub(crate) fn attempt_queued(&mut self) -> Result<(), Error> {
        let pending = self.log.submit(self.attempt_record()).map_err(|e| {
            tracing::error!(error = %e, "audit attempt not queued: refusing the query");
            Error::audit_unavailable()
        })?;
        self.pending = Some(pending);
        self.attempted = true;
        Ok(())
    }

    /// Waits until the queued attempt is durable; `audit_unavailable` if it cannot be made so.
    pub(crate) async fn durable(&mut self) -> Result<(), Error> {
        match self.pending.take() {
            None => Ok(()),
            Some(p) => p.await.map(|_| ()).map_err(|e| {
                tracing::error!(error = %e, "audit attempt not durable: refusing the query");
                // Its commit failed: the log holds no attempt, so what it gets is a refusal
                // (`query_denied`), not a completion of an attempt it never saw.
                self.attempted = false;
                Error::audit_unavailable()
            }),
        }
    }

    /// The error a failed query reports: its own, unless its attempt record could not be made
    /// durable (then `audit_unavailable`, which says more). Waits at most [`SETTLE_WITHIN`]: a
    /// log that cannot answer by then is unavailable.
    pub(crate) async fn settle(&mut self, e: Error) -> Error {
        match tokio::time::timeout(SETTLE_WITHIN, self.durable()).await {
            Ok(Ok(())) => e,
            Ok(Err(audit)) => audit,
            Err(_) => {
                tracing::error!("audit attempt not durable in time: refusing the query");
                Error::audit_unavailable()
            }
        }
    }

    /// Records a request that ended in an error before its answer started.
    pub(crate) async fn failed(mut self, err: &Error) {
        self.finished = true;
        let mut record = std::mem::replace(
            &mut self.record,
            AuditRecord::new(Event::QueryDenied, "", Decision::Deny),
        );
        record.ts = now();
        record.code = Some(err.code.to_string());
        record.reason = err.reason.map(str::to_string);
        record.error = Some(
            err.extra
                .as_ref()
                .and_then(|e| e.audit_detail.clone())
                .unwrap_or_else(|| err.message.clone()),
        );
        record.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if self.attempted {
            record.event = Event::QueryCompletion;
            record.decision = Decision::Allow;
            record.outcome = Some(
                match err.code {
                    "timeout" => "timeout",
                    "client_disconnected" | "query_cancelled" => "cancelled",
                    _ => "error",
                }
                .into(),
            );
        }
        tracing::info!(
            kind = err.kind.as_str(),
            code = err.code,
            "query refused or failed"
        );
        match tokio::time::timeout(SETTLE_WITHIN, self.log.append(record)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit record for a failed request not written")
            }
            // Still queued: the writer commits it when it can (or logs that it could not).
            Err(_) => tracing::error!("audit record for a failed request not durable in time"),
        }
    }

    /// Hands the record over to the answer's completion: nothing records through this
    /// `QueryAudit` afterwards (it is finished), so the record is moved, not copied.
    pub(crate) fn completion(&mut self) -> Completion {
        self.finished = true;
        let mut record = std::mem::replace(
            &mut self.record,
            AuditRecord::new(Event::QueryDenied, String::new(), Decision::Deny),
        );
        record.event = Event::QueryCompletion;
        record.decision = Decision::Allow;
        Completion {
            log: self.log.clone(),
            record: Some(record),
            wait: self.wait_for_completion,
            started: self.started,
            rows: 0,
            bytes: 0,
            sub_queries: None,
        }
    }
}

impl Drop for QueryAudit {
    /// The request was dropped before it ended (the client disconnected while it was being
    /// processed): record that too.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut record = self.record.clone();
        record.ts = now();
        record.code = Some("client_disconnected".into());
        record.error = Some("the client disconnected before the answer started".into());
        record.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if self.attempted {
            record.event = Event::QueryCompletion;
            record.decision = Decision::Allow;
            record.outcome = Some("cancelled".into());
        }
        self.log.append_detached(record);
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The completion record of a streaming answer. Written when the answer ends; if the response
/// is dropped first (the client left), written on drop with outcome `cancelled`.
pub(crate) struct Completion {
    log: AuditLog,
    record: Option<AuditRecord>,
    /// Wait until the record is durable (otherwise it is queued for the next group commit).
    wait: bool,
    started: Instant,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// A federated query's sub-queries, completed by the scans as they run (warehouse query
    /// ids, rows).
    pub(crate) sub_queries: Option<SubQueryLog>,
}

impl Completion {
    fn fill(&mut self, outcome: &str, error: Option<(&str, &str)>) -> Option<AuditRecord> {
        let mut r = self.record.take()?;
        if let Some(log) = &self.sub_queries
            && let Ok(l) = log.lock()
        {
            r.sub_queries = l.clone();
        }
        r.ts = now();
        r.outcome = Some(outcome.into());
        r.rows = Some(self.rows);
        r.bytes = Some(self.bytes);
        r.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if let Some((code, message)) = error {
            r.code = Some(code.into());
            r.error = Some(message.into());
        }
        Some(r)
    }

    pub(crate) async fn finish(&mut self, outcome: &str, error: Option<(&str, &str)>) {
        let Some(r) = self.fill(outcome, error) else {
            return;
        };
        let written = if self.wait {
            tokio::time::timeout(SETTLE_WITHIN, self.log.append(r))
                .await
                .map(|r| r.map(|_| ()))
        } else {
            // Group-committed behind the answer (with the next query's attempt, or within a
            // few milliseconds); waits for room if the writer is behind. The writer logs a
            // commit that fails, and a completion lost in a crash is recorded as `unknown` when
            // the log is next opened.
            tokio::time::timeout(SETTLE_WITHIN, self.log.queue_lazy(r)).await
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit completion record not written"),
            Err(_) => tracing::error!("audit completion record not queued in time"),
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(r) = self.fill("cancelled", None) {
            self.log.append_detached(r);
        }
    }
}
