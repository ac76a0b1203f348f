//! `sluice audit ...`: the compliance questions from the command line, reading the log
//! directly (the daemon may be running or not).

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use sluice_audit::query::{self, ExportFormat, ExportHeader, Filter};
use sluice_audit::{Signer, chain};

use crate::app::{AuditPaths, Policy, StartupError};
use crate::config::Config;

/// Where the log is: a configuration file, or a data directory (or both).
#[derive(Debug, Args)]
pub struct Target {
    /// Configuration file (for the data directory, audit paths and PHI tags).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the configuration's).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The filters of `sluice audit search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    target: Target,
    /// User id.
    #[arg(long)]
    user: Option<String>,
    /// Tenant id.
    #[arg(long)]
    tenant: Option<String>,
    /// A table read (`orders`, `public.orders`, ...).
    #[arg(long)]
    table: Option<String>,
    /// A column read (`orders.amount`).
    #[arg(long)]
    column: Option<String>,
    /// From this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Completion outcome: ok, error, timeout, cancelled, truncated.
    #[arg(long)]
    outcome: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// query_attempt, query_completion or query_denied.
    #[arg(long)]
    event: Option<String>,
    /// Denied requests and failed queries only.
    #[arg(long)]
    denied_or_failed: bool,
    /// At most this many records.
    #[arg(long)]
    limit: Option<u64>,
}

/// `sluice audit` subcommands other than `verify`.
#[derive(Debug, Subcommand)]
pub enum Question {
    /// Records matching every filter, as JSON lines.
    Search(SearchArgs),
    /// Who read a table (or one of its columns) in the last N days.
    Access {
        #[command(flatten)]
        target: Target,
        /// The table.
        #[arg(long)]
        table: String,
        /// A column of it.
        #[arg(long)]
        column: Option<String>,
        /// Days back from now.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// The anomaly report over the last N days (rules in the README).
    Anomalies {
        #[command(flatten)]
        target: Target,
        /// Baseline days.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Seal the oldest records into a signed archive segment (`<data_dir>/archive/`) and remove
    /// them from the live log; verification of both keeps working.
    Archive {
        #[command(flatten)]
        target: Target,
        /// Seal every record up to this sequence number...
        #[arg(long, conflicts_with = "older_than_days")]
        upto_seq: Option<u64>,
        /// ...or every record older than this many days.
        #[arg(long)]
        older_than_days: Option<i64>,
    },
    /// Exports, covered by the latest signed checkpoint (after verifying the chain).
    Export {
        #[command(subcommand)]
        kind: ExportKind,
    },
}

/// Export kinds.
#[derive(Debug, Subcommand)]
pub enum ExportKind {
    /// Everything recorded about one user (GDPR subject access).
    Gdpr {
        #[command(flatten)]
        target: Target,
        /// The subject.
        #[arg(long)]
        user: String,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
    /// Every access to tables tagged `phi` (HIPAA-style access report); needs `--config`.
    Phi {
        #[command(flatten)]
        target: Target,
        /// From this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

fn err(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

fn time(s: &Option<String>) -> Result<Option<DateTime<Utc>>, StartupError> {
    s.as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| err(format!("{v:?} is not an RFC 3339 time")))
        })
        .transpose()
}

/// The configuration named by a target (or defaults), with the data directory applied.
pub fn load(target: &Target) -> Result<Config, StartupError> {
    let mut cfg = match &target.config {
        Some(p) => Config::load(p).map_err(err)?,
        None => defaults_only(),
    };
    if let Some(d) = &target.data_dir {
        cfg.server.data_dir = d.clone();
    }
    Ok(cfg)
}

/// A configuration with defaults everywhere, for tools that need only the data directory.
fn defaults_only() -> Config {
    const MINIMAL: &str = "[auth.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"UNUSED\"\nissuer = \"-\"\naudience = \"-\"\n";
    match Config::parse(MINIMAL) {
        Ok(c) => c,
        Err(e) => unreachable!("built-in configuration: {e}"),
    }
}

fn print_lines<T: serde::Serialize>(items: &[T]) {
    for i in items {
        println!("{}", serde_json::to_string(i).unwrap_or_default());
    }
}

/// Runs one question.
pub fn run(q: Question) -> Result<(), StartupError> {
    match q {
        Question::Search(a) => {
            let paths = AuditPaths::of(&load(&a.target)?);
            let filter = Filter {
                since: time(&a.since)?,
                until: time(&a.until)?,
                user: a.user,
                tenant: a.tenant,
                table: a.table,
                column: a.column,
                outcome: a.outcome,
                decision: a.decision,
                event: a.event,
                denied_or_failed: a.denied_or_failed,
                limit: a.limit,
                ..Filter::default()
            };
            let conn = sluice_audit::open_read_only(&paths.log).map_err(err)?;
            query::for_each(&conn, &filter, |r| {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
                Ok(())
            })
            .map_err(err)?;
        }
        Question::Access {
            target,
            table,
            column,
            days,
        } => {
            let paths = AuditPaths::of(&load(&target)?);
            let conn = sluice_audit::open_read_only(&paths.log).map_err(err)?;
            let since = Utc::now() - Duration::days(days.max(1));
            print_lines(
                &query::who_accessed(&conn, &table, column.as_deref(), since).map_err(err)?,
            );
        }
        Question::Anomalies { target, days } => {
            let paths = AuditPaths::of(&load(&target)?);
            let conn = sluice_audit::open_read_only(&paths.log).map_err(err)?;
            print_lines(&query::anomalies(&conn, Utc::now(), days).map_err(err)?);
        }
        Question::Archive {
            target,
            upto_seq,
            older_than_days,
        } => {
            let paths = AuditPaths::of(&load(&target)?);
            let upto = match (upto_seq, older_than_days) {
                (Some(s), _) => s,
                (None, Some(d)) => {
                    let conn = sluice_audit::open_read_only(&paths.log).map_err(err)?;
                    let f = Filter {
                        until: Some(Utc::now() - Duration::days(d)),
                        ..Filter::default()
                    };
                    let mut last = None;
                    query::for_each(&conn, &f, |r| {
                        last = Some(r.seq);
                        Ok(())
                    })
                    .map_err(err)?;
                    last.ok_or_else(|| err("no record is that old"))?
                }
                (None, None) => return Err(err("give --upto-seq or --older-than-days")),
            };
            let signer = Signer::load_or_create(&paths.signing_key).map_err(err)?;
            let seg = sluice_audit::archive::archive(
                &paths.log,
                &paths.checkpoints,
                &paths.archive_dir,
                &signer,
                upto,
            )
            .map_err(err)?;
            println!(
                "{}",
                serde_json::json!({"segment": seg.path, "first": seg.first, "last": seg.last, "checkpoint": seg.checkpoint})
            );
        }
        Question::Export { kind } => {
            let (target, filter, name, subject, format) = match kind {
                ExportKind::Gdpr {
                    target,
                    user,
                    format,
                } => {
                    let f = Filter {
                        user: Some(user.clone()),
                        ..Filter::default()
                    };
                    (target, f, "gdpr_subject_access", user, format)
                }
                ExportKind::Phi {
                    target,
                    since,
                    until,
                    format,
                } => {
                    let cfg = load(&target)?;
                    let tables = Policy::from_config(&cfg).map_err(err)?.phi_tables;
                    if tables.is_empty() {
                        return Err(err("no table is tagged \"phi\" in the configuration"));
                    }
                    let f = Filter {
                        any_table: tables.clone(),
                        since: time(&since)?,
                        until: time(&until)?,
                        event: Some("query_attempt".into()),
                        ..Filter::default()
                    };
                    (target, f, "hipaa_phi_access", tables.join(","), format)
                }
            };
            let format = match format.as_str() {
                "jsonl" => ExportFormat::JsonLines,
                "csv" => ExportFormat::Csv,
                other => return Err(err(format!("format {other:?}: use jsonl or csv"))),
            };
            let paths = AuditPaths::of(&load(&target)?);
            // Only an intact log is exported, covered by its latest signed checkpoint.
            let key = Signer::load_or_create(&paths.signing_key)
                .map_err(err)?
                .public_key();
            let report =
                sluice_audit::verify_all(&paths.log, &paths.checkpoints, &paths.archive_dir, &key)
                    .map_err(err)?;
            if let Some(seq) = report.first_bad_seq {
                return Err(err(format!(
                    "the audit log is not intact (first bad sequence number {seq}): nothing exported"
                )));
            }
            let checkpoint = chain::read_checkpoints(&paths.checkpoints)
                .map_err(err)?
                .into_iter()
                .max_by_key(|c| c.seq);
            let header = ExportHeader {
                export: name.into(),
                subject,
                generated_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                checkpoint,
            };
            let conn = sluice_audit::open_read_only(&paths.log).map_err(err)?;
            let mut out = std::io::stdout().lock();
            query::export(&conn, &filter, &header, format, &mut out).map_err(err)?;
        }
    }
    Ok(())
}
