//! A cache of verified rewrites, so a query text seen before (a dashboard re-sending its SQL, a
//! driver's prepared statement) costs a hash lookup instead of parse, rewrite, print and verify.
//!
//! The rewrite is a pure function of: the SQL text, the catalog (one per connection and policy
//! snapshot), the caller's groups (grants, masks), the caller's row limit, the number of caller
//! parameters, the tenant, and the caller's attributes that row filters bind. The tenant and the
//! attributes are bind parameters in every placeholder style, so the cached text serves every
//! tenant and attribute value; the key carries everything else (each filtered attribute's
//! presence, kind and, where lists bind element by element, length), and the tenant too where
//! the style binds it inline. Callers keep one cache per catalog snapshot (a reloaded policy
//! starts with an empty cache). Only verified rewrites are kept: a refusal is recomputed each
//! time, so garbage cannot evict honest entries for longer than one insertion each.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hashlink::LruCache;

use crate::{
    AttributeValue, BoundValue, Caller, Catalog, ParamSource, ParamStyle, PolicyError,
    RewrittenQuery,
};

/// Default most entries kept.
pub const DEFAULT_REWRITE_CACHE_ENTRIES: usize = 10_000;
/// Default most bytes kept (SQL in and out, groups, manifest), approximately.
pub const DEFAULT_REWRITE_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Independently locked shards (less contention between runtime threads).
const SHARDS: usize = 16;
/// Per-entry bookkeeping counted on top of the strings.
const ENTRY_OVERHEAD: usize = 160;

#[derive(PartialEq, Eq, Hash)]
struct Key {
    connection: String,
    sql: String,
    groups: Vec<String>,
    row_limit: Option<u64>,
    params: usize,
    /// The tenant, only where the style writes it into the SQL text.
    inline_tenant: Option<String>,
    /// The shape of each attribute the catalog's row filters bind, in
    /// [`Catalog::filter_attributes`] order: absent, or its kind and (lists bound element by
    /// element) its length. The values are bound parameters, so they stay out of the key.
    attributes: Vec<Option<(u8, usize)>>,
}

struct Shard {
    entries: LruCache<Key, RewrittenQuery>,
    bytes: usize,
}

/// A bounded, sharded LRU cache of verified rewrites. See the module documentation.
pub struct RewriteCache {
    shards: Vec<Mutex<Shard>>,
    max_entries_per_shard: usize,
    max_bytes_per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hits and misses since the cache was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that ran the policy.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Approximate bytes held now.
    pub bytes: usize,
}

impl RewriteCache {
    /// A cache of at most `max_entries` entries and about `max_bytes` bytes (both split evenly
    /// over its shards, never more in all; 0 entries disables caching).
    pub fn new(max_entries: usize, max_bytes: usize) -> RewriteCache {
        let shards = SHARDS.min(max_entries.max(1));
        RewriteCache {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: LruCache::new_unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            max_entries_per_shard: max_entries / shards,
            max_bytes_per_shard: max_bytes / shards,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// [`crate::rewrite_with_params`] of `sql` on `connection`'s catalog, answered from the
    /// cache when the same text was rewritten before for the same grants. A hit does not parse.
    pub fn rewrite(
        &self,
        connection: &str,
        sql: &str,
        catalog: &Catalog,
        caller: &Caller<'_>,
        params: usize,
    ) -> Result<RewrittenQuery, PolicyError> {
        let style = catalog.param_style();
        // The tenant's form is checked on every call, hit or miss.
        crate::check_tenant(caller.tenant, style)?;
        if self.max_entries_per_shard == 0 {
            return crate::rewrite_with_params(sql, catalog, caller, params);
        }
        let key = Key {
            connection: connection.to_string(),
            sql: sql.to_string(),
            groups: caller.groups.to_vec(),
            row_limit: caller.row_limit,
            params,
            inline_tenant: (style == ParamStyle::InlineLiteral).then(|| caller.tenant.to_string()),
            attributes: catalog
                .filter_attributes()
                .iter()
                .map(|(name, ty)| {
                    caller.attributes.get(name).map(|v| match v.fits(*ty) {
                        true => shape(v, catalog),
                        // Refused by the rewrite, so never cached: never a hit either.
                        false => (u8::MAX, 0),
                    })
                })
                .collect(),
        };
        let shard = &self.shards[shard_of(&key) % self.shards.len()];
        if let Some(found) = lock(shard)
            .entries
            .get(&key)
            .map(|r| with_tenant(r, caller))
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(found);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let rewritten = crate::rewrite_with_params(sql, catalog, caller, params)?;
        let mut template = rewritten.clone();
        for p in &mut template.params {
            p.value = BoundValue::Tenant(String::new());
        }
        for f in &mut template.filters {
            f.value = None;
        }
        let size = entry_bytes(&key, &template);
        if size <= self.max_bytes_per_shard {
            let value = entry_value_bytes(&template);
            let mut s = lock(shard);
            if let Some(old) = s.entries.insert(key, template) {
                // Another thread filled it meanwhile (with the same value): count it once.
                s.bytes = s
                    .bytes
                    .saturating_sub(size - value + entry_value_bytes(&old));
            }
            s.bytes += size;
            while s.entries.len() > self.max_entries_per_shard || s.bytes > self.max_bytes_per_shard
            {
                match s.entries.remove_lru() {
                    Some((k, v)) => s.bytes = s.bytes.saturating_sub(entry_bytes(&k, &v)),
                    None => break,
                }
            }
        }
        Ok(rewritten)
    }

    /// Hits, misses and size.
    pub fn stats(&self) -> CacheStats {
        let (mut entries, mut bytes) = (0, 0);
        for s in &self.shards {
            let s = lock(s);
            entries += s.entries.len();
            bytes += s.bytes;
        }
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard_of(key: &Key) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.sql.hash(&mut h);
    key.connection.hash(&mut h);
    h.finish() as usize
}

/// An attribute's shape in the key: its kind, and its length where the dialect binds a list
/// element by element (the SQL has one placeholder per element).
fn shape(v: &AttributeValue, catalog: &Catalog) -> (u8, usize) {
    let arrays = catalog.dialect() == crate::Dialect::Postgres;
    match v {
        AttributeValue::Text(_) => (0, 1),
        AttributeValue::Integer(_) => (1, 1),
        AttributeValue::TextList(l) => (2, if arrays { 0 } else { l.len() }),
        AttributeValue::IntegerList(l) => (3, if arrays { 0 } else { l.len() }),
    }
}

/// The cached rewrite with this caller's tenant and attribute values bound. The key's shapes
/// match, so every attribute a parameter names is there, of the kind it was cached with.
fn with_tenant(template: &RewrittenQuery, caller: &Caller<'_>) -> RewrittenQuery {
    let mut r = template.clone();
    for p in &mut r.params {
        p.value = match &p.source {
            ParamSource::Tenant => BoundValue::Tenant(caller.tenant.to_string()),
            ParamSource::Attribute { name, element } => {
                match (caller.attributes.get(name), element) {
                    (Some(AttributeValue::Text(s)), None) => BoundValue::Text(s.clone()),
                    (Some(AttributeValue::Integer(i)), None) => BoundValue::Integer(*i),
                    (Some(AttributeValue::TextList(l)), None) => BoundValue::TextList(l.clone()),
                    (Some(AttributeValue::IntegerList(l)), None) => {
                        BoundValue::IntegerList(l.clone())
                    }
                    (Some(AttributeValue::TextList(l)), Some(i)) => {
                        BoundValue::Text(l.get(*i).cloned().unwrap_or_default())
                    }
                    (Some(AttributeValue::IntegerList(l)), Some(i)) => {
                        BoundValue::Integer(l.get(*i).copied().unwrap_or_default())
                    }
                    // Not reached (the key's shapes match); an empty text binds no row.
                    _ => BoundValue::Text(String::new()),
                }
            }
        };
    }
    for f in &mut r.filters {
        f.value = f
            .attribute
            .as_ref()
            .and_then(|a| caller.attributes.get(a))
            .cloned();
    }
    r
}

fn value_bytes(v: &BoundValue) -> usize {
    match v {
        BoundValue::Tenant(s) | BoundValue::Text(s) => s.len(),
        BoundValue::Integer(_) => 8,
        BoundValue::TextList(l) => l.iter().map(|s| s.len() + 24).sum(),
        BoundValue::IntegerList(l) => l.len() * 8,
    }
}

fn entry_value_bytes(r: &RewrittenQuery) -> usize {
    r.sql.len()
        + r.params
            .iter()
            .map(|p| value_bytes(&p.value) + 48)
            .sum::<usize>()
        + r.filters.iter().map(|f| f.filter.len() + 96).sum::<usize>()
        + r.manifest
            .columns
            .iter()
            .map(|c| c.len() + 24)
            .sum::<usize>()
        + r.manifest.tables.len() * 96
}

fn entry_bytes(k: &Key, r: &RewrittenQuery) -> usize {
    ENTRY_OVERHEAD
        + k.connection.len()
        + k.sql.len()
        + k.groups.iter().map(|g| g.len() + 24).sum::<usize>()
        + k.inline_tenant.as_ref().map_or(0, String::len)
        + k.attributes.len() * 24
        + entry_value_bytes(r)
}
