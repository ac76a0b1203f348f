//! Caller parameters: values the caller binds to placeholders of its own query, never spliced
//! into SQL text. Positional, in each dialect's own placeholder syntax:
//!
//! | dialect              | caller's placeholders | the tenant's          |
//! |----------------------|-----------------------|-----------------------|
//! | PostgreSQL, DataFusion | `$1` … `$n`         | `$n+1`                |
//! | Snowflake            | `:1` … `:n`           | `:n+1`                |
//! | BigQuery             | `@p1` … `@pn`         | `@sluice_tenant`      |
//! | Databricks           | `:p1` … `:pn`         | `:sluice_tenant`      |
//!
//! The query must use exactly the parameters sent (each of `1..=n` at least once); the
//! tenant's placeholder is never the caller's to write. Catalogs that bind the tenant as an
//! inline literal take no parameters.

use crate::dialect::{ParamStyle, TENANT_PARAM_NAME};
use crate::error::PolicyError;

/// How many parameters the caller sent, and the syntax their placeholders take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallerParams {
    pub(crate) count: usize,
    pub(crate) style: ParamStyle,
}

fn bad(m: impl Into<String>) -> PolicyError {
    PolicyError::Parameter(m.into())
}

impl CallerParams {
    /// The placeholder text of caller parameter `i` (1-based).
    pub(crate) fn text(&self, i: usize) -> Option<String> {
        match self.style {
            ParamStyle::DollarNumbered => Some(format!("${i}")),
            ParamStyle::ColonNumbered => Some(format!(":{i}")),
            ParamStyle::AtNamed => Some(format!("@p{i}")),
            ParamStyle::ColonNamed => Some(format!(":p{i}")),
            ParamStyle::InlineLiteral => None,
        }
    }

    /// The tenant's placeholder text: after the caller's in numbered styles.
    pub(crate) fn tenant(&self) -> Option<String> {
        match self.style {
            ParamStyle::DollarNumbered | ParamStyle::ColonNumbered => self.text(self.count + 1),
            ParamStyle::AtNamed => Some(format!("@{TENANT_PARAM_NAME}")),
            ParamStyle::ColonNamed => Some(format!(":{TENANT_PARAM_NAME}")),
            ParamStyle::InlineLiteral => None,
        }
    }

    /// The number of the caller parameter `text` names, if it is one of those sent.
    pub(crate) fn index(&self, text: &str) -> Option<usize> {
        let digits = match self.style {
            ParamStyle::DollarNumbered => text.strip_prefix('$'),
            ParamStyle::ColonNumbered => text.strip_prefix(':'),
            ParamStyle::AtNamed => text.strip_prefix("@p"),
            ParamStyle::ColonNamed => text.strip_prefix(":p"),
            ParamStyle::InlineLiteral => None,
        }?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let i: usize = digits.parse().ok()?;
        (1..=self.count).contains(&i).then_some(i)
    }

    /// The caller parameter a placeholder in the caller's query names, or why it may not be
    /// there (precise: wrong form, beyond the parameters sent, the tenant's).
    pub(crate) fn check(&self, text: &str) -> Result<usize, PolicyError> {
        if let Some(i) = self.index(text) {
            return Ok(i);
        }
        let Some(first) = self.text(1) else {
            return Err(bad(
                "this connection binds the tenant inline and takes no parameters",
            ));
        };
        // The tenant's own placeholder: a policy refusal, whatever else is wrong.
        if Some(text) == self.tenant().as_deref() {
            return Err(PolicyError::TenantParameter(format!(
                "{text} is beyond the {} parameter(s) sent: it is the tenant's, which only sluice \
                 binds (send every parameter the query uses)",
                self.count
            )));
        }
        if self.count == 0 {
            return Err(bad(format!(
                "the query uses the parameter {text} but no parameters were sent (send them in \
                 \"params\")"
            )));
        }
        let last = self.text(self.count).unwrap_or_default();
        Err(bad(format!(
            "{text} is not one of the parameters sent: use {first} … {last}"
        )))
    }

    /// Every parameter sent is used.
    /// How many times each caller parameter occurs in `statement` (index 1..=count).
    pub(crate) fn occurrences(&self, statement: &sqlparser::ast::Statement) -> Vec<u32> {
        use sqlparser::ast::{Expr, Value};
        let mut n = vec![0u32; self.count + 1];
        if self.count > 0 {
            let _ = sqlparser::ast::visit_expressions(statement, |e| {
                if let Expr::Value(v) = e
                    && let Value::Placeholder(p) = &v.value
                    && let Some(i) = self.index(p)
                    && let Some(c) = n.get_mut(i)
                {
                    *c += 1;
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
        n
    }

    pub(crate) fn all_used(
        &self,
        used: &std::collections::BTreeSet<usize>,
    ) -> Result<(), PolicyError> {
        match (1..=self.count).find(|i| !used.contains(i)) {
            None => Ok(()),
            Some(i) => Err(bad(format!(
                "{} parameters were sent, but the query does not use {}",
                self.count,
                self.text(i).unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_style() {
        let pg = CallerParams {
            count: 2,
            style: ParamStyle::DollarNumbered,
        };
        assert_eq!(pg.index("$2"), Some(2));
        assert_eq!(pg.index("$3"), None);
        assert_eq!(pg.index("$02"), None);
        assert_eq!(pg.tenant().as_deref(), Some("$3"));
        assert_eq!(pg.check("$3").unwrap_err().code(), "policy_denied");
        let bq = CallerParams {
            count: 1,
            style: ParamStyle::AtNamed,
        };
        assert_eq!(bq.index("@p1"), Some(1));
        assert_eq!(bq.tenant().as_deref(), Some("@sluice_tenant"));
        assert!(bq.check("@sluice_tenant").is_err());
        let none = CallerParams {
            count: 0,
            style: ParamStyle::ColonNumbered,
        };
        assert_eq!(none.tenant().as_deref(), Some(":1"));
        assert_eq!(none.check(":1").unwrap_err().code(), "policy_denied");
        assert!(
            none.check(":2")
                .unwrap_err()
                .to_string()
                .contains("no parameters")
        );
        let inline = CallerParams {
            count: 1,
            style: ParamStyle::InlineLiteral,
        };
        assert!(inline.check("$1").is_err());
    }
}
