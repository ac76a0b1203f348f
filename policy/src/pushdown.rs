//! Outer predicates copied into a tenant wrapper (PostgreSQL only).
//!
//! On PostgreSQL each protected table becomes `(SELECT … WHERE tenant = $1 OFFSET 0)`: the
//! `OFFSET 0` fence keeps every user predicate above the tenant filter, so a predicate that can
//! raise an error never sees another tenant's row. It also keeps the planner from using an index
//! for `WHERE id = 5`, so a point lookup would read all the tenant's rows. What may safely run
//! inside the fence is a *leakproof* conjunct: a granted, unmasked column of that table compared
//! (`=`, `<>`, `<`, `<=`, `>`, `>=`, `BETWEEN`) with number or string constants or the caller's
//! own parameters (bound once per query: a prepared point lookup) — a parameter only when it
//! occurs once in the caller's statement, so that PostgreSQL types it from that column (another
//! occurrence analyzed first, `CAST($1 AS float8)` in a CTE, would cast the column instead). Such a comparison cannot
//! raise an error that depends on a row (a constant that does not fit the column's type fails
//! while planning, whatever the data). The conjunct is copied, not moved: the outer `WHERE` still
//! holds it, so the answer is unchanged for every join kind. A masked column is never compared
//! inside (its raw value would filter rows). The verifier accepts exactly these shapes after the
//! tenant predicate.
//!
//! With declared column types (`TableRule::types`) two more shapes are copied, both only
//! between granted, unmasked columns whose types compare with leakproof operators
//! (`leakproof`): a *correlated* comparison with a column of a wrapper at an outer query level,
//! `"<column>" <op> "<item>"."<column>"` (the outer value is fixed for each evaluation of the
//! sub-query, so the operator is the only thing evaluated on another tenant's row), and a
//! *closed* `IN`, `"<column>" IN (SELECT "<item>"."<column>" FROM <wrapper> AS "<item>" [WHERE
//! …])` whose every reference is its own wrapper's (so it is evaluated on the caller's rows
//! only, and once). The rewriter builds them in `Rewriter::copy_into_wrapper`; the verifiers
//! check them in `Verifier::is_correlated_copy` / `is_copied_in` and their `pgverify` twins.

use sqlparser::ast::{
    BinaryOperator, Expr, Query, Select, SetExpr, TableAlias, TableFactor, Value,
};

use crate::catalog::TableRule;
use crate::leakproof::ColumnType;
use crate::params::CallerParams;

/// The comparisons that may be copied.
pub(crate) fn comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

/// `a < b` is `b > a`.
pub(crate) fn flipped(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

/// A number or string constant.
pub(crate) fn constant(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, Value::Number(..) | Value::SingleQuotedString(_)))
}

/// A constant, or one of the caller's own parameters: a value bound once for the whole query
/// (converted to the column's type at bind time, whatever the rows), so comparing a column with
/// it can no more raise a row-dependent error than comparing it with a constant. The tenant's
/// placeholder is not one of them.
pub(crate) fn value(e: &Expr, params: &CallerParams) -> bool {
    constant(e)
        || matches!(e, Expr::Value(v)
            if matches!(&v.value, Value::Placeholder(p) if params.index(p).is_some()))
}

/// How often a caller parameter copied inside a fence occurs in the whole rewritten
/// statement: its one occurrence in the caller's statement, and the copy (see the module).
pub(crate) const COPIED_PARAM_OCCURRENCES: u32 = 2;

/// Whether `e` is a copied conjunct as the rewriter emits it: `"<unmasked column>" <op>
/// <value>` or `"<unmasked column>" BETWEEN <value> AND <value>` (a constant or a caller
/// parameter: [`value`]; a parameter only if it occurs [`COPIED_PARAM_OCCURRENCES`] times in
/// the statement, `occurrences` by parameter index).
pub(crate) fn is_copied(
    rule: &TableRule,
    groups: &[String],
    quote: char,
    params: &CallerParams,
    occurrences: &[u32],
    e: &Expr,
) -> bool {
    let (column, values): (&Expr, Vec<&Expr>) = match e {
        Expr::BinaryOp { left, op, right } if comparison(op) => (left, vec![right]),
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => (expr, vec![low, high]),
        _ => return false,
    };
    let Expr::Identifier(i) = column else {
        return false;
    };
    let declared = rule.types.get(&i.value).copied();
    let ok = |v: &Expr| {
        (value(v, params)
            && match v {
                Expr::Value(x) => match &x.value {
                    Value::Placeholder(p) => params
                        .index(p)
                        .and_then(|i| occurrences.get(i))
                        .is_some_and(|n| *n == COPIED_PARAM_OCCURRENCES),
                    _ => true,
                },
                _ => true,
            })
            || (declared.is_some() && literal_type(v) == declared)
    };
    i.quote_style == Some(quote)
        && values.into_iter().all(ok)
        && rule
            .view(groups)
            .iter()
            .any(|c| c.mask.is_none() && c.name == i.value)
}

/// The type of a typed date or time literal (`DATE '1994-01-01'`, `TIMESTAMP '…'`,
/// `TIMESTAMPTZ '…'`, without precision): compared with a column declared of that same type it
/// is copied like a constant (the comparison is leakproof, and a literal that does not parse
/// fails while planning).
pub(crate) fn literal_type(e: &Expr) -> Option<ColumnType> {
    use sqlparser::ast::{DataType, TimezoneInfo};
    // (The printer puts a typed literal in parentheses.)
    let mut e = e;
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    let Expr::TypedString(ts) = e else {
        return None;
    };
    if ts.uses_odbc_syntax || !matches!(ts.value.value, Value::SingleQuotedString(_)) {
        return None;
    }
    match &ts.data_type {
        DataType::Date => Some(ColumnType::Date),
        DataType::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            Some(ColumnType::Timestamp)
        }
        DataType::Timestamp(None, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            Some(ColumnType::TimestampTz)
        }
        _ => None,
    }
}

/// The parts of a sub-query that may be copied as a closed `IN` (see the module): a query that
/// is nothing but `SELECT … FROM (<derived table>) AS <alias> [WHERE …]` — no WITH, ORDER BY,
/// LIMIT or other clause, one FROM item without joins, LATERAL, sample or alias column list.
/// Returns the SELECT, the derived table and its alias; whether the derived table is a
/// wrapper, and the rest, is the caller's to check.
pub(crate) fn closed_shape(q: &Query) -> Option<(&Select, &Query, &TableAlias)> {
    let Query {
        with: None,
        body,
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks,
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators,
    } = q
    else {
        return None;
    };
    let SetExpr::Select(select) = body.as_ref() else {
        return None;
    };
    if !locks.is_empty() || !pipe_operators.is_empty() || !crate::verify::select_is_plain(select) {
        return None;
    }
    let [twj] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(alias),
        sample: None,
    } = &twj.relation
    else {
        return None;
    };
    (twj.joins.is_empty() && alias.columns.is_empty()).then_some((
        select.as_ref(),
        subquery.as_ref(),
        alias,
    ))
}

/// The conjuncts of `e` (`a AND b AND c` → `[a, b, c]`).
pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::catalog::{Catalog, TableName, TableRule};
    use crate::dialect::{Dialect, ParamStyle};
    use crate::{BindParam, Caller, TenantBinding};

    /// A PostgreSQL catalog of one protected table `public.orders (id, tenant_id, amount)`,
    /// and the tenant bound as `$1` with no caller parameters.
    pub(crate) fn orders_world() -> (Catalog, TenantBinding) {
        let rule = TableRule::protected(
            TableName {
                catalog: None,
                schema: "public".into(),
                table: "orders".into(),
            },
            "tenant_id",
            vec!["id".into(), "tenant_id".into(), "amount".into()],
        );
        let catalog = Catalog::new(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            None,
            "public".into(),
            vec![rule],
        )
        .unwrap();
        let binding = TenantBinding::Placeholder {
            text: "$1".into(),
            param: BindParam {
                name: None,
                source: crate::ParamSource::Tenant,
                value: crate::BoundValue::Tenant("A".into()),
            },
            caller: crate::params::CallerParams {
                count: 0,
                style: ParamStyle::DollarNumbered,
            },
            attrs: Default::default(),
        };
        (catalog, binding)
    }

    #[test]
    fn the_verifier_refuses_anything_but_copied_comparisons_beside_the_tenant() {
        let (catalog, binding) = orders_world();
        let caller = Caller {
            tenant: "A",
            groups: &[],
            row_limit: None,
            attributes: &crate::NO_ATTRIBUTES,
        };
        let wrapped = |inside: &str| {
            format!(
                r#"SELECT "id" FROM (SELECT "id", "tenant_id", "amount" FROM "public"."orders" WHERE {inside} OFFSET 0) AS "orders""#
            )
        };
        let ok =
            |inside: &str| crate::verify::verify(&wrapped(inside), &catalog, &binding, &caller);
        assert_eq!(ok(r#""tenant_id" = $1"#), Ok(()));
        assert!(ok(r#"("tenant_id" = $1) AND ("id" = 5) AND ("amount" > 100)"#).is_ok());
        assert!(ok(r#"("tenant_id" = $1) AND ("id" BETWEEN 1 AND 9)"#).is_ok());
        // With one caller parameter the tenant is `$2`: the caller's may be compared inside.
        let with_param = TenantBinding::Placeholder {
            text: "$2".into(),
            param: BindParam {
                name: None,
                source: crate::ParamSource::Tenant,
                value: crate::BoundValue::Tenant("A".into()),
            },
            caller: crate::params::CallerParams {
                count: 1,
                style: ParamStyle::DollarNumbered,
            },
            attrs: Default::default(),
        };
        // A copied parameter occurs twice: in the caller's (outer) predicate and in the copy.
        let outer = |inside: &str, outer: &str| format!("{} WHERE {outer}", wrapped(inside));
        let ok1 = |inside: &str, o: &str| {
            crate::verify::verify(&outer(inside, o), &catalog, &with_param, &caller)
        };
        assert_eq!(
            ok1(r#"("tenant_id" = $2) AND ("id" = $1)"#, r#""id" = $1"#),
            Ok(())
        );
        assert!(
            ok1(
                r#"("tenant_id" = $2) AND ("id" BETWEEN $1 AND 9)"#,
                r#""id" BETWEEN $1 AND 9"#
            )
            .is_ok()
        );
        for bad in [
            // The tenant's placeholder is no caller value; nor is an expression of one.
            r#"("tenant_id" = $2) AND ("id" = $2)"#,
            r#"("tenant_id" = $2) AND ("id" = ($1 + 1))"#,
            r#"("tenant_id" = $2) AND ("id" = $3)"#,
        ] {
            assert!(ok1(bad, r#""id" = $1"#).is_err(), "{bad} passed");
        }
        // A parameter that occurs elsewhere too (whose type another occurrence may fix before
        // the fence is analyzed) is refused inside, by both verifiers.
        let inside = r#"("tenant_id" = $2) AND ("amount" > $1)"#;
        let twice = r#"("amount" > $1) AND ("id" = $1)"#;
        assert!(ok1(inside, r#""amount" > $1"#).is_ok());
        assert!(ok1(inside, twice).is_err(), "a parameter used twice passed");
        assert!(
            crate::pgverify::verify(
                &outer(inside, r#""amount" > $1"#),
                &catalog,
                &with_param,
                &caller
            )
            .is_ok()
        );
        assert!(
            crate::pgverify::verify(&outer(inside, twice), &catalog, &with_param, &caller).is_err(),
            "pgverify: a parameter used twice passed"
        );
        for bad in [
            // A predicate that can raise an error on another tenant's row.
            r#"("tenant_id" = $1) AND ((1 / ("amount" - 5)) = 1)"#,
            // Anything but the tenant first.
            r#"("id" = 5) AND ("tenant_id" = $1)"#,
            r#"("tenant_id" = $1) OR ("id" = 5)"#,
            r#"("tenant_id" = $1) AND (("id" = 5) OR ("id" = 6))"#,
            r#"("tenant_id" = $1) AND ("id" = "amount")"#,
            r#"("tenant_id" = $1) AND ("secret" = 1)"#,
            r#"("tenant_id" = $1) AND ("id" BETWEEN 1 AND "amount")"#,
            r#"("tenant_id" = $1) AND ("id" NOT BETWEEN 1 AND 9)"#,
        ] {
            assert!(ok(bad).is_err(), "{bad} passed");
        }
    }
}
