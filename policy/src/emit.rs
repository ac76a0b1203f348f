//! SQL text sluice itself writes for a warehouse (the federated workspace's per-source scans and
//! schema probes): quoted names and literals in the warehouse's own syntax. What is written
//! here is never trusted: it goes through [`crate::rewrite`] (parse, policy, verifier) like any
//! caller's query before a warehouse sees it.

use crate::catalog::TableRule;
use crate::dialect::Dialect;

/// `name` as a quoted identifier of `dialect` (declared names hold no quote characters; one
/// that does is doubled, which every dialect reads back as the character).
pub fn ident(dialect: Dialect, name: &str) -> String {
    let q = dialect.quote();
    let doubled: String = [q, q].iter().collect();
    format!("{q}{}{q}", name.replace(q, &doubled))
}

/// The declared table's name as the warehouse spells it.
pub fn table(dialect: Dialect, rule: &TableRule) -> String {
    let mut parts = vec![];
    if let Some(c) = &rule.name.catalog {
        parts.push(ident(dialect, c));
    }
    parts.push(ident(dialect, &rule.name.schema));
    parts.push(ident(dialect, &rule.name.table));
    parts.join(".")
}

/// A string literal `dialect` reads back as exactly `s`, or `None` when it is safer not to write
/// the value (control characters; backslashes, which are escapes in BigQuery and Databricks).
pub fn string(dialect: Dialect, s: &str) -> Option<String> {
    if s.chars().any(char::is_control)
        || (matches!(dialect, Dialect::BigQuery | Dialect::Databricks) && s.contains('\\'))
    {
        return None;
    }
    Some(format!("'{}'", s.replace('\'', "''")))
}

/// `SELECT <columns> FROM <table> [WHERE <conjuncts>] [LIMIT n]`, columns quoted.
pub fn select(
    dialect: Dialect,
    rule: &TableRule,
    columns: &[&str],
    conjuncts: &[String],
    limit: Option<usize>,
) -> String {
    let mut sql = format!(
        "SELECT {} FROM {}",
        columns
            .iter()
            .map(|c| ident(dialect, c))
            .collect::<Vec<_>>()
            .join(", "),
        table(dialect, rule)
    );
    if !conjuncts.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conjuncts.join(" AND "));
    }
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{TableName, TableRule};

    #[test]
    fn names_and_literals_in_each_dialect() {
        let rule = TableRule::public(
            TableName {
                catalog: Some("p".into()),
                schema: "s".into(),
                table: "t".into(),
            },
            vec!["a".into()],
        );
        assert_eq!(
            select(
                Dialect::BigQuery,
                &rule,
                &["a"],
                &["(`a` = 1)".into()],
                Some(5)
            ),
            "SELECT `a` FROM `p`.`s`.`t` WHERE (`a` = 1) LIMIT 5"
        );
        assert_eq!(ident(Dialect::Postgres, "we\"ird"), "\"we\"\"ird\"");
        assert_eq!(string(Dialect::Postgres, "o'k").as_deref(), Some("'o''k'"));
        assert_eq!(string(Dialect::Databricks, "a\\b"), None);
        assert_eq!(string(Dialect::Postgres, "a\nb"), None);
    }
}
