//! The projection of a wrapper: the caller's visible columns, masked ones replaced by their mask
//! expression under the column's own name, so nothing outside the wrapper sees a raw value.

use sqlparser::ast::{Expr, Ident, SelectItem, Value};
use sqlparser::parser::Parser;

use crate::catalog::{ColumnView, MaskKind};
use crate::dialect::Dialect;
use crate::error::PolicyError;

/// The text type each dialect casts to before hashing or cutting.
fn text_type(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres | Dialect::DataFusion | Dialect::Snowflake => "TEXT",
        Dialect::BigQuery | Dialect::Databricks => "STRING",
    }
}

/// The mask expression for `column`. Column names are validated identifiers from the
/// configuration (no quote characters), and constants become literals through the AST.
fn mask_expr(d: Dialect, kind: &MaskKind, column: &str) -> Result<Expr, PolicyError> {
    let q = d.quote();
    let col = format!("{q}{column}{q}");
    let t = text_type(d);
    let text = match kind {
        MaskKind::Null => return Ok(Expr::value(Value::Null)),
        MaskKind::Constant(s) => return Ok(Expr::value(Value::SingleQuotedString(s.clone()))),
        MaskKind::Hash if d == Dialect::BigQuery => format!("TO_HEX(MD5(CAST({col} AS {t})))"),
        MaskKind::Hash => format!("md5(CAST({col} AS {t}))"),
        MaskKind::Last4 => format!("concat('****', right(CAST({col} AS {t}), 4))"),
    };
    let dialect = d.parser_dialect();
    Parser::new(&*dialect)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| PolicyError::Verification(format!("mask expression: {e}")))
}

/// The wrapper's select list for a caller's view of a table.
pub(crate) fn projection(
    d: Dialect,
    view: &[ColumnView<'_>],
) -> Result<Vec<SelectItem>, PolicyError> {
    let q = d.quote();
    view.iter()
        .map(|c| {
            let ident = Ident::with_quote(q, c.name);
            Ok(match c.mask {
                None => SelectItem::UnnamedExpr(Expr::Identifier(ident)),
                Some(kind) => SelectItem::ExprWithAlias {
                    expr: mask_expr(d, kind, c.name)?,
                    alias: ident,
                },
            })
        })
        .collect()
}
