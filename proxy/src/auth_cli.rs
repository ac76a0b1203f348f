//! `sluice apikey ...` and `sluice client ...`: API keys and web-ticket service clients, written
//! straight to the data directory's auth store (the daemon may be running: SQLite WAL). A
//! secret is printed once and only its hash is kept.

use clap::{Args, Subcommand};

use crate::app::{StartupError, open_auth_store};
use crate::audit_cli::{Target, load};
use crate::auth::principal::{AuthMethod, Principal, unix_now, valid_name};

/// Default rotation overlap: the old secret keeps working this long.
const DEFAULT_OVERLAP_HOURS: i64 = 24;

/// `sluice apikey`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; prints it once.
    Create(CreateKey),
    /// List keys (never their secrets), as JSON lines.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The key id (the part between `slk_` and the second `_`).
        id: String,
    },
}

/// `sluice apikey create`
#[derive(Debug, Args)]
pub struct CreateKey {
    #[command(flatten)]
    target: Target,
    /// User the key authenticates as.
    #[arg(long)]
    user: String,
    /// Tenant the key is scoped to.
    #[arg(long)]
    tenant: String,
    /// Comma-separated groups.
    #[arg(long, value_delimiter = ',', default_value = "")]
    groups: Vec<String>,
    /// Days until the key expires (none: it does not).
    #[arg(long)]
    expires_in_days: Option<u32>,
    /// A label.
    #[arg(long, default_value = "")]
    name: String,
}

/// `sluice client`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a service client (a customer backend that mints web tickets); prints its
    /// secret once.
    Create {
        #[command(flatten)]
        target: Target,
        /// Client id.
        #[arg(long)]
        id: String,
        /// Comma-separated tenants it may mint tickets for (`*`: any).
        #[arg(long, value_delimiter = ',', required = true)]
        tenants: Vec<String>,
        /// Comma-separated groups it may put in tickets (default: any without an admin or
        /// compliance role).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// An attribute it may put in tickets, with the values it may mint:
        /// `--attribute region=emea,apac` (`region=*`: any value). Repeat for each attribute;
        /// with none, tickets may carry any attribute with any value.
        #[arg(long = "attribute", value_name = "NAME=VALUES")]
        attributes: Vec<String>,
    },
    /// Issue a new secret; older ones keep working for the overlap, then stop.
    Rotate {
        #[command(flatten)]
        target: Target,
        /// Client id.
        #[arg(long)]
        id: String,
        /// Hours the old secret keeps working.
        #[arg(long, default_value_t = DEFAULT_OVERLAP_HOURS)]
        overlap_hours: i64,
    },
    /// List clients, as JSON lines.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a client, its secrets and its service tokens.
    Delete {
        #[command(flatten)]
        target: Target,
        /// Client id.
        #[arg(long)]
        id: String,
    },
}

fn store(target: &Target) -> Result<crate::auth::store::AuthStore, StartupError> {
    open_auth_store(&load(target)?.server.data_dir)
}

fn err(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

/// Runs an `apikey` command.
pub fn apikey(cmd: ApiKeyCommand) -> Result<(), StartupError> {
    match cmd {
        ApiKeyCommand::Create(c) => {
            let groups: Vec<String> = c.groups.into_iter().filter(|g| !g.is_empty()).collect();
            if !valid_name(&c.user)
                || !valid_name(&c.tenant)
                || !groups.iter().all(|g| valid_name(g))
            {
                return Err(err("user, tenant and groups must be non-empty names"));
            }
            let cfg = load(&c.target)?;
            if !cfg.auth.api_keys.enabled {
                eprintln!(
                    "note: API keys are disabled in this configuration ([auth.api_keys] enabled = false)"
                );
            }
            let store = open_auth_store(&cfg.server.data_dir)?;
            let now = unix_now();
            let principal = Principal {
                user: c.user,
                tenant: c.tenant,
                groups,
                attributes: Default::default(),
                method: AuthMethod::ApiKey,
                session_id: None,
            };
            let expires = c.expires_in_days.map(|d| now + i64::from(d) * 24 * 3600);
            let (id, key) = store
                .create_api_key(&c.name, &principal, now, expires)
                .map_err(err)?;
            eprintln!("API key {id} created; it is shown only this once:");
            println!("{key}");
            Ok(())
        }
        ApiKeyCommand::List { target } => {
            for k in store(&target)?.list_api_keys().map_err(err)? {
                println!("{}", serde_json::to_string(&k).unwrap_or_default());
            }
            Ok(())
        }
        ApiKeyCommand::Revoke { target, id } => {
            if store(&target)?
                .revoke_api_key(&id, unix_now())
                .map_err(err)?
            {
                println!("revoked {id}");
                Ok(())
            } else {
                Err(err(format!("no live API key {id:?}")))
            }
        }
    }
}

/// Runs a `client` command.
pub fn client(cmd: ClientCommand) -> Result<(), StartupError> {
    let now = unix_now();
    match cmd {
        ClientCommand::Create {
            target,
            id,
            tenants,
            groups,
            attributes,
        } => {
            if !valid_name(&id) || !tenants.iter().all(|t| valid_name(t)) {
                return Err(err("client id and tenants must be non-empty names"));
            }
            let mut scope = std::collections::BTreeMap::new();
            for a in &attributes {
                let (name, values) = a
                    .split_once('=')
                    .ok_or_else(|| err("--attribute takes NAME=VALUE[,VALUE...]"))?;
                let values: Vec<String> = values.split(',').map(str::to_string).collect();
                if !sluice_policy::valid_attribute_name(name)
                    || !values.iter().all(|v| valid_name(v))
                {
                    return Err(err(
                        "--attribute: an attribute name (letters, digits, _) and non-empty values",
                    ));
                }
                scope.insert(name.to_string(), values);
            }
            let scope = (!attributes.is_empty()).then_some(&scope);
            let secret = store(&target)?
                .create_client(&id, &tenants, groups.as_deref(), scope, now)
                .map_err(err)?;
            eprintln!("service client {id} created; its secret is shown only this once:");
            println!("{secret}");
            Ok(())
        }
        ClientCommand::Rotate {
            target,
            id,
            overlap_hours,
        } => {
            if overlap_hours < 0 {
                return Err(err("--overlap-hours must not be negative"));
            }
            let secret = store(&target)?
                .rotate_client_secret(&id, overlap_hours * 3600, now)
                .map_err(err)?;
            eprintln!(
                "new secret for {id}; older secrets stop working in {overlap_hours} h. Shown once:"
            );
            println!("{secret}");
            Ok(())
        }
        ClientCommand::List { target } => {
            for c in store(&target)?.list_clients(now).map_err(err)? {
                println!("{}", serde_json::to_string(&c).unwrap_or_default());
            }
            Ok(())
        }
        ClientCommand::Delete { target, id } => {
            if store(&target)?.delete_client(&id).map_err(err)? {
                println!("deleted {id}");
                Ok(())
            } else {
                Err(err(format!("no client {id:?}")))
            }
        }
    }
}

/// `sluice vault`
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Print a fresh key-encryption key (32 random bytes, base64) for `vault.key_env` /
    /// `vault.key_file`.
    NewKey,
    /// Re-seal every credential under the current key. Run it after making the new key current
    /// and listing the old one in `previous_key_files` / `previous_key_envs`; the daemon may keep
    /// serving meanwhile (each record is a compare-and-set). Then drop the old key.
    RotateKey {
        /// Configuration file (for the data directory and the keys).
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

/// Runs a `vault` command.
pub fn vault(cmd: VaultCommand) -> Result<(), StartupError> {
    match cmd {
        VaultCommand::NewKey => {
            println!("{}", crate::vault::crypto::new_key().map_err(err)?);
            Ok(())
        }
        VaultCommand::RotateKey { config } => {
            let cfg = crate::config::Config::load(&config).map_err(err)?;
            let vc = cfg
                .vault
                .as_ref()
                .ok_or_else(|| err("the configuration has no [vault]"))?;
            let keys = crate::vault::keyring(vc).map_err(err)?;
            let store = crate::vault::store::VaultStore::open(
                &cfg.server.data_dir.join(crate::vault::store::VAULT_FILE),
            )
            .map_err(err)?;
            let n = crate::vault::store::CredentialStore::rotate(&store, &keys, unix_now())
                .map_err(err)?;
            println!(
                "re-sealed {n} credential(s) under key {}",
                keys.current_id()
            );
            Ok(())
        }
    }
}
