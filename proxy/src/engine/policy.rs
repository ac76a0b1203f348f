//! The policy in force: what decides access, as one immutable snapshot.

use std::collections::BTreeMap;

use sluice_policy::{Catalog, RewriteCache};

use crate::auth::principal::Principal;
use crate::config::{Config, catalog_for, parse_table_name};

/// The policy in force: one catalog per connection and the group row limits. Replaced whole on
/// reload (SIGHUP); a query keeps the snapshot it started with.
pub struct Policy {
    /// Catalog per connection id.
    pub catalogs: BTreeMap<String, Catalog>,
    /// Row limit per group.
    pub group_max_rows: BTreeMap<String, u64>,
    /// Tables tagged `phi`, as recorded in the audit log (`catalog.schema.table` form).
    pub phi_tables: Vec<String>,
    /// A digest of everything that decides access (tables, grants, masks, limits), recorded
    /// with every query.
    pub version: String,
    /// Verified rewrites of this snapshot (a reload starts a new, empty one).
    pub cache: RewriteCache,
}

impl Policy {
    /// Builds the policy of a configuration (pure).
    pub fn from_config(config: &Config) -> Result<Policy, String> {
        let mut catalogs = BTreeMap::new();
        let attributes = config.auth.attribute_types()?;
        for c in &config.connections {
            catalogs.insert(
                c.id.clone(),
                catalog_for(c, &attributes).map_err(|e| format!("connection {}: {e}", c.id))?,
            );
        }
        let mut phi_tables = Vec::new();
        for c in &config.connections {
            for t in c
                .tables
                .iter()
                .filter(|t| t.tags.iter().any(|g| g == "phi"))
            {
                phi_tables.push(parse_table_name(&t.name)?.to_string());
            }
        }
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!(
                "{:?}{:?}{:?}",
                config.connections, config.limits.group_max_rows, config.auth.attributes
            )
            .as_bytes(),
        );
        Ok(Policy {
            catalogs,
            group_max_rows: config.limits.group_max_rows.clone(),
            phi_tables,
            version: hex::encode(&digest.as_ref()[..8]),
            cache: RewriteCache::new(
                config.limits.rewrite_cache_entries,
                config.limits.rewrite_cache_bytes,
            ),
        })
    }

    /// The row limit of a caller: the largest among their groups that have one.
    pub fn row_limit(&self, groups: &[String]) -> Option<u64> {
        groups
            .iter()
            .filter_map(|g| self.group_max_rows.get(g).copied())
            .max()
    }

    /// Whether `group` exempts its members from some row filter (`except`): a service client
    /// whose group scope does not name it explicitly may not mint it.
    pub fn exempts(&self, group: &str) -> bool {
        self.catalogs
            .values()
            .flat_map(|c| c.tables())
            .flat_map(|t| &t.filters)
            .any(|f| f.except.iter().any(|g| g == group))
    }

    /// The catalog of a connection, and the policy's view of the caller.
    pub fn for_caller<'a>(
        &'a self,
        connection: &str,
        principal: &'a Principal,
    ) -> Option<(&'a Catalog, sluice_policy::Caller<'a>)> {
        let catalog = self.catalogs.get(connection)?;
        let caller = sluice_policy::Caller {
            tenant: &principal.tenant,
            groups: &principal.groups,
            row_limit: self.row_limit(&principal.groups),
            attributes: &principal.attributes,
        };
        Some((catalog, caller))
    }
}
