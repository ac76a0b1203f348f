//! Tamper evidence: the hash chain, signed checkpoints, and verification.
//!
//! Each record carries `hash = SHA-256(prev_hash || canonical bytes)`. Checkpoints `(seq, head
//! hash, time)` are signed with an Ed25519 key kept apart from the log and appended to their own
//! JSON-lines file, so a tail truncated after a checkpoint is detected even if the log file
//! itself is rewritten consistently.

use std::io::Write;
use std::path::Path;

use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{AuditError, AuditRecord};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash of a record given its predecessor's hash.
pub fn record_hash(prev_hash: &str, record: &AuditRecord) -> String {
    let mut ctx = Context::new(&SHA256);
    let mut prev = [0u8; 32];
    if hex::decode_to_slice(prev_hash, &mut prev).is_ok() {
        ctx.update(&prev);
    }
    ctx.update(&record.canonical_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// A signed statement that the log's record `seq` had hash `head_hash` at time `ts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the head record.
    pub seq: u64,
    /// Its hash.
    pub head_hash: String,
    /// When the checkpoint was made (RFC 3339).
    pub ts: String,
    /// First 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// Ed25519 signature of [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The signed message.
    pub fn message(seq: u64, head_hash: &str, ts: &str) -> Vec<u8> {
        format!("sluice-audit-checkpoint:v1:{seq}:{head_hash}:{ts}").into_bytes()
    }

    /// Whether the signature verifies under `public_key`.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&Self::message(self.seq, &self.head_hash, &self.ts), &sig)
            .is_ok()
    }
}

/// The checkpoint signing key.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
}

impl Signer {
    /// Loads a PKCS#8 Ed25519 key (hex-encoded file), creating it (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<Signer, AuditError> {
        let err = |e: String| AuditError::Storage(format!("signing key {}: {e}", path.display()));
        let pkcs8 = match std::fs::read_to_string(path) {
            Ok(text) => hex::decode(text.trim()).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| err("cannot generate".into()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                write_private(path, &hex::encode(doc.as_ref())).map_err(|e| err(e.to_string()))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| err(e.to_string()))?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Signer { key, key_id })
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs a checkpoint of `(seq, head_hash)` now.
    pub fn checkpoint(&self, seq: u64, head_hash: &str) -> Checkpoint {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sig = self.key.sign(&Checkpoint::message(seq, head_hash, &ts));
        Checkpoint {
            seq,
            head_hash: head_hash.to_string(),
            ts,
            key_id: self.key_id.clone(),
            signature: hex::encode(sig.as_ref()),
        }
    }
}

fn key_id(public_key: &[u8]) -> String {
    let d = ring::digest::digest(&SHA256, public_key);
    hex::encode(&d.as_ref()[..8])
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Appends a checkpoint to the checkpoint file and syncs it.
pub fn append_checkpoint(path: &Path, cp: &Checkpoint) -> Result<(), AuditError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::Storage(format!("{}: {e}", path.display())))?;
    let mut line = serde_json::to_vec(cp).map_err(|e| AuditError::Storage(e.to_string()))?;
    line.push(b'\n');
    f.write_all(&line)
        .and_then(|()| f.sync_data())
        .map_err(|e| AuditError::Storage(e.to_string()))
}

/// Reads every checkpoint of the file (a missing file has none).
pub fn read_checkpoints(path: &Path) -> Result<Vec<Checkpoint>, AuditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(AuditError::Storage(e.to_string())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| AuditError::Storage(format!("bad checkpoint line: {e}")))
        })
        .collect()
}

/// Pairs query attempts with their completions, records in sequence order. A completion is
/// built from its attempt, so both carry the same request id, user, tenant and session; request
/// ids are the caller's to choose and may repeat (another caller may even send someone else's),
/// so per (request id, user, tenant, session) each completion answers the earliest attempt
/// before it still unanswered (a completion with none is ignored). What is left are the
/// attempts without a completion. The one rule for recovery, verification, archiving and
/// readers that wait for completions.
pub(crate) struct Unanswered<T> {
    open: std::collections::HashMap<String, std::collections::VecDeque<T>>,
    len: usize,
}

/// Who a query record is about, for [`Unanswered`].
#[derive(Clone, Copy)]
pub(crate) struct PairKey<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) tenant: Option<&'a str>,
    pub(crate) session_id: Option<&'a str>,
}

impl<'a> PairKey<'a> {
    pub(crate) fn of(r: &'a AuditRecord) -> Self {
        PairKey {
            request_id: &r.request_id,
            user: r.user.as_deref(),
            tenant: r.tenant.as_deref(),
            session_id: r.session_id.as_deref(),
        }
    }
}

impl<T> Default for Unanswered<T> {
    fn default() -> Self {
        Unanswered {
            open: std::collections::HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Unanswered<T> {
    /// Takes the next record: an attempt keeps `item()`, a completion answers one.
    pub(crate) fn see(&mut self, event: crate::Event, who: PairKey<'_>, item: impl FnOnce() -> T) {
        let key = || {
            let part = |s: Option<&str>| s.unwrap_or("\u{1}").to_string();
            [
                who.request_id.to_string(),
                part(who.user),
                part(who.tenant),
                part(who.session_id),
            ]
            .join("\u{0}")
        };
        match event {
            crate::Event::QueryAttempt => {
                self.open.entry(key()).or_default().push_back(item());
                self.len += 1;
            }
            crate::Event::QueryCompletion => {
                let key = key();
                if let Some(q) = self.open.get_mut(&key) {
                    if q.pop_front().is_some() {
                        self.len -= 1;
                    }
                    if q.is_empty() {
                        self.open.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Attempts without a completion so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Their items, in no particular order.
    pub(crate) fn into_items(self) -> impl Iterator<Item = T> {
        self.open.into_values().flatten()
    }
}

/// The outcome of verifying a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The first sequence number that does not verify, if any.
    pub first_bad_seq: Option<u64>,
    /// What is wrong there.
    pub problem: Option<String>,
    /// Completions with outcome `unknown`: queries whose own completion was lost when the
    /// process stopped (written by recovery when the log was next opened).
    pub unknown_outcomes: u64,
    /// Attempts with no completion in the log: queries running now, or lost with a process
    /// that has not been restarted since (their outcome is unknown).
    pub unanswered_attempts: u64,
}

impl VerifyReport {
    /// Whether the log is intact.
    pub fn ok(&self) -> bool {
        self.first_bad_seq.is_none()
    }
}

/// Verifies the chain of `records` (in the order stored, by sequence number) and the
/// `checkpoints` against `public_key`. `anchor` is `(seq, hash)` of the last record sealed into
/// an archive segment, when older records were archived.
pub fn verify_records(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    public_key: &[u8],
    anchor: Option<(u64, String)>,
) -> VerifyReport {
    let mut report = VerifyReport {
        records: records.len() as u64,
        checkpoints: checkpoints.len() as u64,
        ..VerifyReport::default()
    };
    let mut open = Unanswered::default();
    for r in records {
        if r.event == crate::Event::QueryCompletion
            && r.outcome.as_deref() == Some(crate::OUTCOME_UNKNOWN)
        {
            report.unknown_outcomes += 1;
        }
        open.see(r.event, PairKey::of(r), || ());
    }
    report.unanswered_attempts = open.len() as u64;
    let mut first: Option<(u64, String)> = None;
    let mut bad = |seq: u64, why: String| {
        if first.as_ref().is_none_or(|(s, _)| seq < *s) {
            first = Some((seq, why));
        }
    };
    let (mut expect_seq, mut prev) = match &anchor {
        Some((seq, hash)) => (seq + 1, hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    let mut hashes = std::collections::HashMap::with_capacity(records.len());
    let mut chain_broken = false;
    for r in records {
        if r.seq != expect_seq {
            let why = if r.seq > expect_seq {
                format!("records {expect_seq}..{} are missing (deleted)", r.seq - 1)
            } else {
                format!("record {} is out of order or duplicated", r.seq)
            };
            bad(expect_seq.min(r.seq), why);
            chain_broken = true;
            break;
        }
        if r.prev_hash != prev {
            bad(
                r.seq,
                "its prev_hash does not match the previous record (inserted or reordered)".into(),
            );
            chain_broken = true;
            break;
        }
        if record_hash(&prev, r) != r.hash {
            bad(r.seq, "its content does not match its hash (edited)".into());
            chain_broken = true;
            break;
        }
        hashes.insert(r.seq, r.hash.clone());
        prev = r.hash.clone();
        expect_seq += 1;
    }
    let last_seq = expect_seq - 1;
    for cp in checkpoints {
        if !cp.verify(public_key) {
            bad(
                cp.seq,
                format!("checkpoint at {} has an invalid signature", cp.seq),
            );
            continue;
        }
        if anchor.as_ref().is_some_and(|(a, _)| cp.seq <= *a) {
            continue; // covered by an archive segment
        }
        match hashes.get(&cp.seq) {
            Some(h) if *h == cp.head_hash => {}
            Some(_) => bad(
                cp.seq,
                format!("record {} differs from its signed checkpoint", cp.seq),
            ),
            None if cp.seq > last_seq && !chain_broken => bad(
                last_seq + 1,
                format!(
                    "the log ends at {last_seq} but a signed checkpoint covers {} (truncated)",
                    cp.seq
                ),
            ),
            None => {}
        }
    }
    if let Some((seq, why)) = first {
        report.first_bad_seq = Some(seq);
        report.problem = Some(why);
    }
    report
}
