//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sluice_audit::Signer;

use crate::app::{self, StartupError};
use crate::config::{self, Config};
use crate::http::server;
use crate::{demo, logging};

/// sluice: a zero-ingestion federated query proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file.
        #[arg(long, conflicts_with = "demo")]
        config: Option<PathBuf>,
        /// Serve a generated multi-tenant demo data set (no configuration, no warehouse).
        #[arg(long)]
        demo: bool,
        /// Listen address, overriding the configuration (`host:port`; port 0 picks one).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding the configuration.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a configuration file without starting anything or touching the network.
    CheckConfig {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// API keys for development and automation.
    Apikey {
        #[command(subcommand)]
        command: crate::auth_cli::ApiKeyCommand,
    },
    /// Service clients of the web-ticket flow.
    Client {
        #[command(subcommand)]
        command: crate::auth_cli::ClientCommand,
    },
    /// The credential vault's keys.
    Vault {
        #[command(subcommand)]
        command: crate::auth_cli::VaultCommand,
    },
    /// Mint a demo token (for `serve --demo`).
    Token {
        /// Use the demo signing secret from the data directory.
        #[arg(long, required = true)]
        demo: bool,
        /// Tenant to mint for.
        #[arg(long)]
        tenant: String,
        /// User id.
        #[arg(long, default_value = "demo-user")]
        user: String,
        /// Comma-separated groups.
        #[arg(long, default_value = "analyst", value_delimiter = ',')]
        groups: Vec<String>,
        /// Data directory of the demo.
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and the signed checkpoints. Exits 0 when intact; otherwise 1,
    /// naming the first bad sequence number.
    Verify {
        /// Configuration file (for the data directory and audit paths).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the configuration's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    #[command(flatten)]
    Question(crate::audit_cli::Question),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print, as JSON, what the policy does with a query: the rewritten SQL, its parameters and
    /// what it reads, or the refusal. Exits 0 for both decisions.
    Explain {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Connection id.
        #[arg(long)]
        connection: String,
        /// Tenant of the caller.
        #[arg(long)]
        tenant: String,
        /// Comma-separated groups of the caller.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        /// The caller's attributes, as JSON (`{"region": "emea", "accounts": [7, 9]}`), each
        /// read as its `[auth.attributes]` type.
        #[arg(long, default_value = "{}")]
        attributes: String,
        /// The SQL.
        #[arg(long)]
        sql: String,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), StartupError> {
    match cli.command {
        Command::CheckConfig { config } => {
            let c = Config::load(&config).map_err(|e| StartupError(e.to_string()))?;
            let tables: usize = c.connections.iter().map(|c| c.tables.len()).sum();
            println!(
                "{}: OK ({} connection(s), {} table(s))",
                config.display(),
                c.connections.len(),
                tables
            );
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { config, data_dir },
        } => {
            let target = crate::audit_cli::Target { config, data_dir };
            let paths = app::AuditPaths::of(&crate::audit_cli::load(&target)?);
            let key = Signer::load_or_create(&paths.signing_key)
                .map_err(|e| StartupError(e.to_string()))?
                .public_key();
            let report =
                sluice_audit::verify_all(&paths.log, &paths.checkpoints, &paths.archive_dir, &key)
                    .map_err(|e| StartupError(e.to_string()))?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            match (report.first_bad_seq, report.problem) {
                (None, _) => Ok(()),
                (Some(seq), problem) => Err(StartupError(format!(
                    "audit log NOT intact: first bad sequence number {seq}: {}",
                    problem.unwrap_or_default()
                ))),
            }
        }
        Command::Audit {
            command: AuditCommand::Question(q),
        } => crate::audit_cli::run(q),
        Command::Apikey { command } => crate::auth_cli::apikey(command),
        Command::Client { command } => crate::auth_cli::client(command),
        Command::Vault { command } => crate::auth_cli::vault(command),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    connection,
                    tenant,
                    groups,
                    attributes,
                    sql,
                },
        } => {
            let c = Config::load(&config).map_err(|e| StartupError(e.to_string()))?;
            let policy = app::Policy::from_config(&c).map_err(StartupError)?;
            let catalog = policy.catalogs.get(&connection).ok_or_else(|| {
                StartupError(format!(
                    "no connection named {connection:?} in {}",
                    config.display()
                ))
            })?;
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            let types = c.auth.attribute_types().map_err(StartupError)?;
            let given: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&attributes)
                    .map_err(|e| StartupError(format!("--attributes: not a JSON object: {e}")))?;
            let mut values = sluice_policy::Attributes::new();
            for (name, v) in &given {
                let value = crate::auth::jwt::attribute_value(name, v, &types)
                    .map_err(|why| StartupError(format!("--attributes: {why}")))?;
                values.insert(name.clone(), value);
            }
            let caller = sluice_policy::Caller {
                tenant: &tenant,
                groups: &groups,
                row_limit: policy.row_limit(&groups),
                attributes: &values,
            };
            println!(
                "{}",
                crate::engine::explain::document(catalog, &caller, &sql)
            );
            Ok(())
        }
        Command::Token {
            demo: _,
            tenant,
            user,
            groups,
            data_dir,
        } => {
            println!(
                "{}",
                demo::token(&data_dir, &user, &tenant, &groups).map_err(StartupError)?
            );
            Ok(())
        }
        Command::Serve {
            config,
            demo: is_demo,
            listen,
            data_dir,
        } => {
            let mut cfg = match (&config, is_demo) {
                (Some(path), false) => {
                    Config::load(path).map_err(|e| StartupError(e.to_string()))?
                }
                (None, true) => {
                    let dir = data_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
                    let addr = listen
                        .clone()
                        .unwrap_or_else(|| config::DEFAULT_LISTEN.to_string());
                    demo::config(&dir, &addr).map_err(StartupError)?
                }
                _ => return Err(StartupError("give --config <file> or --demo".into())),
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.server.data_dir = d;
            }
            logging::init(&cfg.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                // Room for the deepest query the policy admits (DataFusion's planner and the
                // policy recurse per level), so the policy's own stack switch is never needed.
                .thread_stack_size(sluice_policy::POLICY_STACK_BYTES)
                .enable_all()
                .build()
                .map_err(|e| StartupError(format!("cannot start the runtime: {e}")))?;
            runtime.block_on(serve(cfg, config, is_demo))
        }
    }
}

async fn serve(cfg: Config, path: Option<PathBuf>, is_demo: bool) -> Result<(), StartupError> {
    let listen = cfg.server.listen.clone();
    let data_dir = cfg.server.data_dir.clone();
    let app = app::build_from(cfg, path).await?;
    reload_on_sighup(std::sync::Arc::downgrade(&app.state));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError(e.to_string()))?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "sluice listening");
    println!("sluice listening on http://{addr}");
    let wire = crate::wire::WireListener::bind(&app.state.config.pgwire)?;
    if let Some(w) = &wire {
        let wire_addr = w.local_addr()?;
        tracing::info!(%wire_addr, "pgwire listening");
        println!("sluice PostgreSQL wire protocol on {wire_addr}");
    }
    if is_demo {
        let tenant = demo::TENANTS[0];
        let token = demo::token(&data_dir, "demo-user", tenant, &["analyst".to_string()])
            .map_err(StartupError)?;
        println!(
            "Demo data: tenants {}. A query as tenant {tenant}:",
            demo::TENANTS.join(", ")
        );
        println!("{}", demo::curl_line(&format!("http://{addr}"), &token));
        println!(
            "Token for another tenant: sluice token --demo --tenant {} --data-dir {}",
            demo::TENANTS[1],
            data_dir.display()
        );
    }
    server::serve(app, listener, wire, shutdown_signal()).await
}

/// SIGHUP re-reads the configuration and swaps the policy in; queries in flight keep theirs.
fn reload_on_sighup(state: std::sync::Weak<app::AppState>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: policy reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(state) = state.upgrade() else { return };
            match state.reload_policy() {
                Ok(()) => tracing::info!("policy reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "policy reload failed: the running policy stays")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
