//! Declared column types, and which comparisons between two columns cannot raise an error.
//!
//! A comparison copied inside a tenant wrapper runs on every tenant's rows before the tenant
//! filter has removed them (see `pushdown`). Between a column and a constant that is safe for
//! any type (a constant that does not fit fails while planning, whatever the data). Between
//! two *columns* — a correlated `l_orderkey = l1.l_orderkey` — it is safe only if the operator
//! PostgreSQL resolves for the two types is marked leakproof (`pg_operator.oprcode` with
//! `pg_proc.proleakproof`): such a function raises no error and reveals nothing about its
//! arguments. The classes below are exactly the type pairs whose six comparison operators are
//! leakproof on PostgreSQL 15 (the test `proxy/tests/postgres.rs` checks this table against
//! the live catalog). Everything else — `numeric` (its operators are not marked leakproof),
//! cross-class pairs that need an implicit cast (`date` = `timestamp` converts and can
//! overflow; `int4` = `numeric` casts), JSON, arrays, user types — is `Other` and never moves.

/// A declared column type, as far as the comparisons copied into a wrapper care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `smallint`, `integer`, `bigint` (`int2`, `int4`, `int8`): comparable with each other.
    Integer,
    /// `real`, `double precision` (`float4`, `float8`).
    Float,
    /// `text`, `varchar` / `character varying` (the latter is binary-coercible to `text`).
    Text,
    /// `char(n)` / `character(n)` (`bpchar`).
    Char,
    /// `boolean`.
    Boolean,
    /// `date`.
    Date,
    /// `timestamp` (without time zone).
    Timestamp,
    /// `timestamptz` (with time zone).
    TimestampTz,
    /// `uuid`.
    Uuid,
    /// Any other known type (`numeric`, `json`, `bytea`, `interval`, ...): never compared
    /// inside a wrapper.
    Other,
}

/// The type names a declaration may use that map to [`ColumnType::Other`].
const OTHER_TYPES: &[&str] = &[
    "numeric",
    "decimal",
    "money",
    "json",
    "jsonb",
    "bytea",
    "interval",
    "time",
    "timetz",
    "time without time zone",
    "time with time zone",
    "inet",
    "cidr",
    "macaddr",
    "xml",
    "bit",
    "varbit",
    "bit varying",
    "tsvector",
    "array",
    "other",
];

impl ColumnType {
    /// The class of a PostgreSQL type name as written in a declaration: case-insensitive, a
    /// length or precision (`varchar(20)`, `numeric(15,2)`) ignored, an array (`int4[]`) is
    /// `Other`. `None` for a name not known here (a typo must not silently disable, or
    /// enable, anything).
    pub fn parse(name: &str) -> Option<ColumnType> {
        let lower = name.trim().to_ascii_lowercase();
        if lower.ends_with("[]") {
            return Some(ColumnType::Other);
        }
        let base = match lower.split_once('(') {
            Some((b, rest)) if rest.ends_with(')') => b.trim().to_string(),
            Some(_) => return None,
            None => lower,
        };
        let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match base.as_str() {
            "smallint" | "int2" | "integer" | "int" | "int4" | "bigint" | "int8" => {
                ColumnType::Integer
            }
            "real" | "float4" | "double precision" | "float8" | "float" => ColumnType::Float,
            "text" | "varchar" | "character varying" => ColumnType::Text,
            "char" | "character" | "bpchar" => ColumnType::Char,
            "boolean" | "bool" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            "uuid" => ColumnType::Uuid,
            other if OTHER_TYPES.contains(&other) => ColumnType::Other,
            _ => return None,
        })
    }
}

/// Whether `=`, `<>`, `<`, `<=`, `>` and `>=` between columns of these two types resolve to
/// leakproof operators on PostgreSQL: the same class, and not `Other`.
pub fn comparable(left: ColumnType, right: ColumnType) -> bool {
    left.comparable_with(right)
}

impl ColumnType {
    /// [`comparable`], as a method.
    pub fn comparable_with(self, other: ColumnType) -> bool {
        self == other && self != ColumnType::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_parse_to_their_class_and_unknown_names_are_refused() {
        assert_eq!(ColumnType::parse("INT4"), Some(ColumnType::Integer));
        assert_eq!(ColumnType::parse("bigint"), Some(ColumnType::Integer));
        assert_eq!(ColumnType::parse("varchar(20)"), Some(ColumnType::Text));
        assert_eq!(
            ColumnType::parse("character  varying (3)"),
            Some(ColumnType::Text)
        );
        assert_eq!(ColumnType::parse("numeric(15,2)"), Some(ColumnType::Other));
        assert_eq!(ColumnType::parse("int4[]"), Some(ColumnType::Other));
        assert_eq!(
            ColumnType::parse("timestamp with time zone"),
            Some(ColumnType::TimestampTz)
        );
        assert_eq!(ColumnType::parse("integr"), None);
        assert_eq!(ColumnType::parse("int4(3"), None);
        assert!(comparable(ColumnType::Integer, ColumnType::Integer));
        assert!(!comparable(ColumnType::Date, ColumnType::Timestamp));
        assert!(!comparable(ColumnType::Other, ColumnType::Other));
        assert!(!comparable(ColumnType::Text, ColumnType::Char));
    }
}
