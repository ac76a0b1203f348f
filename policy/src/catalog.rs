//! The declared catalog of one connection: which relations exist for sluice, which are protected
//! by a tenant column, and which columns each exposes. Anything not declared is refused.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::dialect::{Dialect, ParamStyle};
use crate::error::{CatalogError, PolicyError};
use crate::filter::{AttributeType, RowFilter};
use crate::leakproof::ColumnType;

/// Longest identifier accepted in a declaration.
const MAX_IDENT_LEN: usize = 128;

/// A declared table name, written exactly as the warehouse stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TableName {
    /// Catalog / database / project, when the warehouse has one and it is declared.
    pub catalog: Option<String>,
    /// Schema / dataset.
    pub schema: String,
    /// Table.
    pub table: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.catalog {
            write!(f, "{c}.")?;
        }
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// How a declared table may be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Shared reference data: readable by every tenant, no filter.
    Public,
    /// Every read is filtered to the caller's tenant on this column.
    Protected {
        /// The column holding the tenant id.
        tenant_column: String,
    },
}

/// How a masked column is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskKind {
    /// An MD5 hex digest of the value's text (joinable, not readable).
    Hash,
    /// NULL.
    Null,
    /// `****` followed by the last four characters.
    Last4,
    /// A constant string.
    Constant(String),
}

/// A mask on one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRule {
    /// How the value is shown.
    pub kind: MaskKind,
    /// Groups that see the raw value.
    pub except: Vec<String>,
}

/// One declared table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRule {
    /// Its name in the warehouse.
    pub name: TableName,
    /// Public or protected.
    pub access: Access,
    /// The columns sluice exposes, in the table's order. Undeclared columns are never read.
    pub columns: Vec<String>,
    /// Groups that may read the table at all; `None` means every authenticated caller.
    pub readers: Option<Vec<String>>,
    /// Columns restricted to some groups; a column not listed is visible to every reader.
    pub column_groups: BTreeMap<String, Vec<String>>,
    /// Columns shown masked to everyone but the listed groups.
    pub masks: BTreeMap<String, MaskRule>,
    /// Declared column types (optional, per column): a comparison between two columns is
    /// copied inside a wrapper only when both types are declared and comparable without an
    /// error (`leakproof`). They must match the warehouse's.
    pub types: BTreeMap<String, ColumnType>,
    /// Row filters from the caller's attributes (protected tables only), each combined with
    /// the tenant predicate by `AND` inside the wrapper for the callers it applies to.
    pub filters: Vec<RowFilter>,
}

/// One column as a given caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnView<'a> {
    /// The declared column name.
    pub name: &'a str,
    /// The mask applied to it for this caller, if any.
    pub mask: Option<&'a MaskKind>,
}

fn member(groups: &[String], allowed: &[String]) -> bool {
    groups.iter().any(|g| allowed.contains(g))
}

impl TableRule {
    /// A public table: every declared column, no restriction.
    pub fn public(name: TableName, columns: Vec<String>) -> Self {
        TableRule {
            name,
            access: Access::Public,
            columns,
            readers: None,
            column_groups: BTreeMap::new(),
            masks: BTreeMap::new(),
            types: BTreeMap::new(),
            filters: Vec::new(),
        }
    }

    /// A protected table: every declared column, no restriction beyond the tenant filter.
    pub fn protected(name: TableName, tenant_column: &str, columns: Vec<String>) -> Self {
        TableRule {
            access: Access::Protected {
                tenant_column: tenant_column.to_string(),
            },
            ..TableRule::public(name, columns)
        }
    }

    /// The row filters that apply to a caller with `groups`, in declared order.
    pub fn filters_for<'r>(&'r self, groups: &'r [String]) -> impl Iterator<Item = &'r RowFilter> {
        self.filters.iter().filter(move |f| f.applies_to(groups))
    }

    /// Whether a caller with `groups` may read this table.
    pub fn readable_by(&self, groups: &[String]) -> bool {
        self.readers.as_ref().is_none_or(|r| member(groups, r))
    }

    /// The declared type of `column` when a caller with `groups` sees it unmasked: what a
    /// comparison copied inside a wrapper may compare (`leakproof`); `None` for a column not
    /// granted, masked or without a declared type.
    pub(crate) fn unmasked_type(&self, groups: &[String], column: &str) -> Option<ColumnType> {
        let unmasked = self
            .view(groups)
            .iter()
            .any(|v| v.name == column && v.mask.is_none());
        unmasked.then(|| self.types.get(column).copied()).flatten()
    }

    /// The columns a caller with `groups` sees, in table order, each with its mask (if any).
    /// The one definition of column visibility: the rewrite's wrappers, the federation's
    /// source schemas and scans all use it.
    pub fn view(&self, groups: &[String]) -> Vec<ColumnView<'_>> {
        self.columns
            .iter()
            .filter(|c| self.column_groups.get(*c).is_none_or(|g| member(groups, g)))
            .map(|c| ColumnView {
                name: c,
                mask: self
                    .masks
                    .get(c)
                    .filter(|m| !member(groups, &m.except))
                    .map(|m| &m.kind),
            })
            .collect()
    }
}

/// The declared catalog of one connection.
#[derive(Debug, Clone)]
pub struct Catalog {
    dialect: Dialect,
    param_style: ParamStyle,
    default_catalog: Option<String>,
    default_schema: String,
    tables: Vec<TableRule>,
    /// PostgreSQL: whether each protected table's wrapper ends in the `OFFSET 0` fence (the
    /// default). Without it ([`Catalog::relying_on_row_security`]) the warehouse's own row
    /// security must keep every other tenant's row from a leaky predicate.
    fenced: bool,
    /// Every attribute a row filter of this catalog binds, with its declared type (the
    /// rewrite cache's key).
    filter_attributes: Vec<(String, AttributeType)>,
}

/// A relation name resolved against the catalog.
pub(crate) enum Resolved<'a> {
    Table(&'a TableRule),
}

fn check_ident(name: &str) -> Result<(), CatalogError> {
    if name.is_empty() {
        return Err(CatalogError::InvalidIdentifier(name.into(), "empty"));
    }
    if name.len() > MAX_IDENT_LEN {
        return Err(CatalogError::InvalidIdentifier(
            name.into(),
            "longer than 128 bytes",
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '"' || c == '`') {
        return Err(CatalogError::InvalidIdentifier(
            name.into(),
            "control characters and quote characters are not allowed",
        ));
    }
    Ok(())
}

impl Catalog {
    /// Builds and validates a catalog.
    pub fn new(
        dialect: Dialect,
        param_style: ParamStyle,
        default_catalog: Option<String>,
        default_schema: String,
        tables: Vec<TableRule>,
    ) -> Result<Self, CatalogError> {
        check_ident(&default_schema)?;
        if let Some(c) = &default_catalog {
            check_ident(c)?;
        }
        let mut seen = HashSet::new();
        for t in &tables {
            if let Some(c) = &t.name.catalog {
                check_ident(c)?;
            }
            check_ident(&t.name.schema)?;
            check_ident(&t.name.table)?;
            let key = (
                t.name
                    .catalog
                    .as_deref()
                    .map(|c| dialect.normalize_declared(c)),
                dialect.normalize_declared(&t.name.schema),
                dialect.normalize_declared(&t.name.table),
            );
            if !seen.insert(key) {
                return Err(CatalogError::DuplicateTable(t.name.to_string()));
            }
            if t.columns.is_empty() {
                return Err(CatalogError::NoColumns(t.name.to_string()));
            }
            let mut cols = HashSet::new();
            for c in &t.columns {
                check_ident(c)?;
                if !cols.insert(dialect.normalize_declared(c)) {
                    return Err(CatalogError::DuplicateColumn(t.name.to_string(), c.clone()));
                }
            }
            for c in t
                .column_groups
                .keys()
                .chain(t.masks.keys())
                .chain(t.types.keys())
            {
                if !t.columns.contains(c) {
                    return Err(CatalogError::UnknownColumn(t.name.to_string(), c.clone()));
                }
            }
            for f in &t.filters {
                let bad = |why| CatalogError::BadFilter(t.name.to_string(), f.text.clone(), why);
                if t.access == Access::Public {
                    return Err(bad("row filters are for protected tables"));
                }
                if !t.columns.contains(&f.column) {
                    return Err(bad("its column is not among the declared columns"));
                }
                if f.attribute().is_some() && param_style == ParamStyle::InlineLiteral {
                    return Err(bad("attributes need bind parameters"));
                }
            }
            if let Access::Protected { tenant_column } = &t.access
                && !t.columns.iter().any(|c| c == tenant_column)
            {
                return Err(CatalogError::TenantColumnNotDeclared(
                    t.name.to_string(),
                    tenant_column.clone(),
                ));
            }
        }
        let mut filter_attributes: Vec<(String, AttributeType)> = tables
            .iter()
            .flat_map(|t| &t.filters)
            .filter_map(|f| f.attribute().map(|(name, ty)| (name.to_string(), ty)))
            .collect();
        filter_attributes.sort_by(|a, b| a.0.cmp(&b.0));
        filter_attributes.dedup_by(|a, b| a.0 == b.0);
        Ok(Catalog {
            dialect,
            param_style,
            default_catalog,
            default_schema,
            tables,
            fenced: true,
            filter_attributes,
        })
    }

    /// This catalog with no `OFFSET 0` fence in its PostgreSQL wrappers: for a connection
    /// whose warehouse enforces the same tenant isolation with its own row-level security
    /// (PostgreSQL evaluates a policy's condition before any predicate of the query that is not
    /// leakproof, so a predicate that raises an error never sees another tenant's row), and
    /// whose planner may then push the query's predicates, joins and correlations into the
    /// table scans. The wrappers keep their tenant predicate; nothing is copied inside them.
    #[must_use]
    pub fn relying_on_row_security(mut self) -> Self {
        self.fenced = false;
        self
    }

    /// Whether PostgreSQL wrappers end in the `OFFSET 0` fence (those carrying a row filter
    /// always do: the warehouse's row security knows the tenant, not the caller's attributes).
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    /// The attributes row filters of this catalog bind, sorted.
    pub fn filter_attributes(&self) -> &[(String, AttributeType)] {
        &self.filter_attributes
    }

    /// The dialect of this connection.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How tenant values are bound.
    pub fn param_style(&self) -> ParamStyle {
        self.param_style
    }

    /// The declared tables.
    pub fn tables(&self) -> &[TableRule] {
        &self.tables
    }

    /// The catalog part sluice emits for a table (declared, or the connection default).
    pub(crate) fn emitted_catalog<'a>(&'a self, rule: &'a TableRule) -> Option<&'a str> {
        rule.name
            .catalog
            .as_deref()
            .or(self.default_catalog.as_deref())
    }

    /// Resolves a relation name exactly as the warehouse would: case folding per dialect,
    /// default catalog and schema. Unknown names are refused.
    pub(crate) fn resolve(&self, name: &ObjectName) -> Result<Resolved<'_>, PolicyError> {
        let mut parts: Vec<&Ident> = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(i) => parts.push(i),
                ObjectNamePart::Function(_) => {
                    return Err(PolicyError::Unsupported("a computed relation name".into()));
                }
            }
        }
        let d = self.dialect;
        let (catalog, schema, table) = match parts.as_slice() {
            [t] => (None, self.default_schema.clone(), d.normalize(t)),
            [s, t] => (None, d.normalize(s), d.normalize(t)),
            [c, s, t] => (Some(d.normalize(c)), d.normalize(s), d.normalize(t)),
            _ => return Err(PolicyError::UnknownRelation(name.to_string())),
        };
        let default_schema = d.normalize_declared(&self.default_schema);
        let schema = if parts.len() == 1 {
            default_schema
        } else {
            schema
        };
        for rule in &self.tables {
            if d.normalize_declared(&rule.name.schema) != schema
                || d.normalize_declared(&rule.name.table) != table
            {
                continue;
            }
            if let Some(c) = &catalog {
                match self.emitted_catalog(rule) {
                    Some(declared) if &d.normalize_declared(declared) == c => {}
                    _ => continue,
                }
            }
            return Ok(Resolved::Table(rule));
        }
        Err(PolicyError::UnknownRelation(name.to_string()))
    }

    /// Looks a rule up by its exact emitted (quoted) name parts; used by the verifier, which
    /// only ever sees names sluice itself emitted.
    pub(crate) fn by_emitted_name(&self, parts: &[String]) -> Option<&TableRule> {
        self.tables.iter().find(|rule| {
            let mut expect: Vec<&str> = Vec::with_capacity(3);
            if let Some(c) = self.emitted_catalog(rule) {
                expect.push(c);
            }
            expect.push(&rule.name.schema);
            expect.push(&rule.name.table);
            expect.len() == parts.len() && expect.iter().zip(parts).all(|(a, b)| *a == b)
        })
    }
}
