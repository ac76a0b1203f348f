//! Row filters from the caller's attributes: declared per table, combined with the tenant
//! predicate by `AND` inside the table's wrapper, their values bound as parameters.
//!
//! A filter is written `<column> = attr.<name>` (a scalar attribute), `<column> IN
//! attr.<name>` (a list attribute), `<column> = <literal>` or `<column> IN (<literal>, …)` (a
//! fixed filter). It applies to every reader of the table, or only to the groups it names
//! (`groups`), except the groups it exempts (`except`). The caller's attribute values come
//! from the verified credential; the policy refuses a query whose caller lacks an attribute a
//! filter needs, or carries it with another type than declared (fail closed: never every row).
//! An empty list attribute matches no row.
//!
//! How the values travel, per placeholder style:
//!
//! | dialect              | scalar attribute      | list attribute                          |
//! |----------------------|-----------------------|-----------------------------------------|
//! | PostgreSQL           | `$k`                  | `= ANY($k)`, one array parameter        |
//! | DataFusion           | `$k`                  | `IN ($k, …)`, one parameter per element |
//! | Snowflake            | `:k`                  | `IN (:k, …)`                            |
//! | BigQuery             | `@sluice_a1`          | `IN (@sluice_a1_1, …)`                  |
//! | Databricks           | `:sluice_a1`          | `IN (:sluice_a1_1, …)`                  |
//!
//! Numbered placeholders follow the caller's and the tenant's, in the order the rewrite first
//! needs each attribute; named ones are numbered the same way. An empty list is `FALSE` where
//! elements are bound one by one, an empty array in PostgreSQL.

use std::collections::BTreeMap;

use sqlparser::ast::{BinaryOperator, Expr, Ident, Value};

use crate::dialect::{Dialect, ParamStyle};
use crate::error::PolicyError;

/// Most elements a list attribute may hold.
pub const MAX_ATTRIBUTE_ITEMS: usize = 1_000;
/// Longest text attribute value (and list element), in bytes.
pub const MAX_ATTRIBUTE_TEXT: usize = 256;
/// Longest attribute name.
const MAX_ATTRIBUTE_NAME: usize = 64;

/// The declared type of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeType {
    /// One string.
    Text,
    /// One 64-bit integer.
    Integer,
    /// A list of strings.
    TextList,
    /// A list of 64-bit integers.
    IntegerList,
}

impl AttributeType {
    /// `text`, `integer`, `text[]` or `integer[]`.
    pub fn parse(s: &str) -> Option<AttributeType> {
        Some(match s.trim() {
            "text" => AttributeType::Text,
            "integer" => AttributeType::Integer,
            "text[]" => AttributeType::TextList,
            "integer[]" => AttributeType::IntegerList,
            _ => return None,
        })
    }

    /// Its name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            AttributeType::Text => "text",
            AttributeType::Integer => "integer",
            AttributeType::TextList => "text[]",
            AttributeType::IntegerList => "integer[]",
        }
    }

    /// Whether it is a list type.
    pub fn is_list(self) -> bool {
        matches!(self, AttributeType::TextList | AttributeType::IntegerList)
    }
}

/// A caller's attribute value, from a verified credential. In JSON: a string, an integer, or
/// an array of either (an empty array is a list of either type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A list of strings.
    TextList(Vec<String>),
    /// A list of integers.
    IntegerList(Vec<i64>),
}

/// A caller's attributes by name.
pub type Attributes = BTreeMap<String, AttributeValue>;

/// No attributes (a caller whose credential carries none).
pub static NO_ATTRIBUTES: Attributes = BTreeMap::new();

/// Whether `name` can name an attribute: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes.
pub fn valid_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_ATTRIBUTE_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ATTRIBUTE_TEXT && !s.chars().any(char::is_control)
}

impl AttributeValue {
    /// The value of a JSON claim or ticket field, checked against the declared type: `None`
    /// when it is of another type, holds an empty or over-long string or a control character,
    /// or a list longer than [`MAX_ATTRIBUTE_ITEMS`].
    pub fn from_json(v: &serde_json::Value, ty: AttributeType) -> Option<AttributeValue> {
        use serde_json::Value as J;
        let text = |v: &J| v.as_str().filter(|s| valid_text(s)).map(str::to_string);
        let list = |v: &J| {
            v.as_array()
                .filter(|a| a.len() <= MAX_ATTRIBUTE_ITEMS)
                .cloned()
        };
        Some(match ty {
            AttributeType::Text => AttributeValue::Text(text(v)?),
            AttributeType::Integer => AttributeValue::Integer(v.as_i64()?),
            AttributeType::TextList => {
                AttributeValue::TextList(list(v)?.iter().map(text).collect::<Option<_>>()?)
            }
            AttributeType::IntegerList => {
                AttributeValue::IntegerList(list(v)?.iter().map(J::as_i64).collect::<Option<_>>()?)
            }
        })
    }

    /// Whether it is a well-formed value of type `ty` (an empty list fits both list types).
    pub fn fits(&self, ty: AttributeType) -> bool {
        match (self, ty) {
            (AttributeValue::Text(s), AttributeType::Text) => valid_text(s),
            (AttributeValue::Integer(_), AttributeType::Integer) => true,
            (AttributeValue::TextList(l), AttributeType::TextList) => {
                l.len() <= MAX_ATTRIBUTE_ITEMS && l.iter().all(|s| valid_text(s))
            }
            (AttributeValue::IntegerList(l), AttributeType::IntegerList) => {
                l.len() <= MAX_ATTRIBUTE_ITEMS
            }
            (AttributeValue::TextList(l), AttributeType::IntegerList) => l.is_empty(),
            (AttributeValue::IntegerList(l), AttributeType::TextList) => l.is_empty(),
            _ => false,
        }
    }

    /// Elements of a list (1 for a scalar).
    pub fn len(&self) -> usize {
        match self {
            AttributeValue::Text(_) | AttributeValue::Integer(_) => 1,
            AttributeValue::TextList(l) => l.len(),
            AttributeValue::IntegerList(l) => l.len(),
        }
    }

    /// Whether it is an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As JSON (the audit log, explain).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// A constant of a fixed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterLiteral {
    /// A string (no quote, backslash or control character: it is printed as it is).
    Text(String),
    /// An integer.
    Integer(i64),
}

/// What a filter compares its column with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOperand {
    /// The caller's attribute of this name and declared type (`=` for a scalar, `IN` for a
    /// list).
    Attribute {
        /// The attribute's name.
        name: String,
        /// Its declared type.
        ty: AttributeType,
    },
    /// Constants (`=` for one, `IN` for several): strings, non-negative integers.
    Values(Vec<FilterLiteral>),
}

/// One declared row filter of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    /// The filtered column (declared name).
    pub column: String,
    /// What it is compared with.
    pub operand: FilterOperand,
    /// Only callers in one of these groups are filtered (`None`: every caller).
    pub groups: Option<Vec<String>>,
    /// Callers in any of these groups are exempt.
    pub except: Vec<String>,
    /// The filter as declared (explain, the audit log).
    pub text: String,
}

fn member(groups: &[String], of: &[String]) -> bool {
    groups.iter().any(|g| of.contains(g))
}

impl RowFilter {
    /// Parses `<column> = attr.<name>`, `<column> IN attr.<name>`, `<column> = <literal>` or
    /// `<column> IN (<literal>, …)`; `attribute` gives each attribute's declared type (`None`:
    /// not declared, refused). Literals are `'text'` (no quote, backslash or control character
    /// inside) or integers. The column is checked against the table by [`crate::Catalog::new`].
    pub fn parse(
        text: &str,
        attribute: &dyn Fn(&str) -> Option<AttributeType>,
    ) -> Result<RowFilter, String> {
        let mut p = FilterParser { s: text, i: 0 };
        let column = p.column()?;
        p.space();
        let is_in = if p.eat("=") {
            false
        } else if p.keyword("in") {
            true
        } else {
            return Err("expected `=` or `IN` after the column".into());
        };
        p.space();
        let operand = if p.keyword("attr") {
            if !p.eat(".") {
                return Err("expected `attr.<name>`".into());
            }
            let name = p.word();
            if !valid_attribute_name(name) {
                return Err(format!("{name:?} is not an attribute name"));
            }
            let ty = attribute(name).ok_or_else(|| {
                format!(
                    "attribute {name:?} is not declared in [auth.attributes] (nor copied by \
                     auth.jwt.claims.attributes)"
                )
            })?;
            match (is_in, ty.is_list()) {
                (false, true) => {
                    return Err(format!(
                        "attribute {name:?} is a list ({}): compare it with IN",
                        ty.name()
                    ));
                }
                (true, false) => {
                    return Err(format!(
                        "attribute {name:?} is a {}: compare it with =",
                        ty.name()
                    ));
                }
                _ => {}
            }
            FilterOperand::Attribute {
                name: name.to_string(),
                ty,
            }
        } else if is_in {
            if !p.eat("(") {
                return Err("expected `attr.<name>` or `(<literal>, …)` after IN".into());
            }
            let mut values = vec![p.literal()?];
            loop {
                p.space();
                if p.eat(")") {
                    break;
                }
                if !p.eat(",") {
                    return Err("expected `,` or `)` in the IN list".into());
                }
                p.space();
                values.push(p.literal()?);
            }
            FilterOperand::Values(values)
        } else {
            FilterOperand::Values(vec![p.literal()?])
        };
        p.space();
        if p.i != p.s.len() {
            return Err(format!("unexpected text {:?}", &p.s[p.i..]));
        }
        Ok(RowFilter {
            column,
            operand,
            groups: None,
            except: Vec::new(),
            text: text.trim().to_string(),
        })
    }

    /// Whether it filters a caller with `groups`.
    pub fn applies_to(&self, groups: &[String]) -> bool {
        self.groups.as_ref().is_none_or(|g| member(groups, g)) && !member(groups, &self.except)
    }

    /// The attribute it binds, if any.
    pub fn attribute(&self) -> Option<(&str, AttributeType)> {
        match &self.operand {
            FilterOperand::Attribute { name, ty } => Some((name, *ty)),
            FilterOperand::Values(_) => None,
        }
    }
}

struct FilterParser<'s> {
    s: &'s str,
    i: usize,
}

impl FilterParser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }
    fn space(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.i += n;
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.rest().starts_with(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> &str {
        let start = self.i;
        let n = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        self.i += n;
        &self.s[start..self.i]
    }
    /// A case-insensitive keyword followed by a non-word character.
    fn keyword(&mut self, k: &str) -> bool {
        let start = self.i;
        let w = self.word();
        if w.eq_ignore_ascii_case(k) {
            true
        } else {
            self.i = start;
            false
        }
    }
    fn column(&mut self) -> Result<String, String> {
        self.space();
        if self.eat("\"") {
            let end = self
                .rest()
                .find('"')
                .ok_or("an unterminated quoted column name")?;
            let name = self.rest()[..end].to_string();
            self.i += end + 1;
            return Ok(name);
        }
        let w = self.word();
        if w.is_empty() {
            return Err("expected a column name".into());
        }
        Ok(w.to_string())
    }
    fn literal(&mut self) -> Result<FilterLiteral, String> {
        if self.eat("'") {
            let end = self.rest().find('\'').ok_or("an unterminated string")?;
            let s = &self.rest()[..end];
            if s.is_empty()
                || s.len() > MAX_ATTRIBUTE_TEXT
                || s.chars()
                    .any(|c| c.is_control() || matches!(c, '\\' | '"' | '`'))
            {
                return Err(
                    "a string constant must be 1 to 256 characters without quotes, backslashes \
                     or control characters"
                        .into(),
                );
            }
            let s = s.to_string();
            self.i += end + 1;
            return Ok(FilterLiteral::Text(s));
        }
        let start = self.i;
        let digits = self.word();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            self.i = start;
            return Err("expected a constant: 'text' or a non-negative integer".into());
        }
        digits
            .parse::<i64>()
            .map(FilterLiteral::Integer)
            .map_err(|_| "an integer constant out of range".to_string())
    }
}

/// What one bound parameter holds, beside its placeholder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum BoundValue {
    /// The tenant (bound strictly: to text as it is, to integers only written canonically).
    Tenant(String),
    /// A text attribute (or one element of a text list), bound as strictly as the tenant.
    Text(String),
    /// An integer attribute (or element).
    Integer(i64),
    /// A whole text list (PostgreSQL arrays).
    TextList(Vec<String>),
    /// A whole integer list (PostgreSQL arrays).
    IntegerList(Vec<i64>),
}

impl BoundValue {
    /// As JSON (the audit log, explain).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The value as the audit log's text form: the tenant and text as they are, the rest as
    /// JSON.
    pub fn shown(&self) -> String {
        match self {
            BoundValue::Tenant(s) | BoundValue::Text(s) => s.clone(),
            other => other.to_json().to_string(),
        }
    }
}

/// Where a bound parameter's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    /// The caller's tenant.
    Tenant,
    /// A caller attribute: the whole value, or (lists bound element by element) element `i`.
    Attribute {
        /// The attribute's name.
        name: String,
        /// The element (0-based) of a list bound one parameter per element.
        element: Option<usize>,
    },
}

/// A filter that applied to one wrapper of a rewritten query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFilter {
    /// The table filtered.
    pub table: crate::TableName,
    /// The filter as declared.
    pub filter: String,
    /// The attribute it was bound with, if any.
    pub attribute: Option<String>,
    /// That attribute's value for this caller.
    pub value: Option<AttributeValue>,
}

/// One attribute's placeholders in a rewritten query.
#[derive(Debug, Clone)]
pub(crate) struct AttrSlot {
    pub(crate) name: String,
    /// One placeholder (scalars; PostgreSQL lists), or one per element.
    pub(crate) texts: Vec<String>,
    /// Whether the whole list is one array parameter.
    pub(crate) array: bool,
    pub(crate) value: AttributeValue,
}

/// The attributes a rewrite binds, allocated as the rewriter first needs each.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttrBinding {
    pub(crate) slots: Vec<AttrSlot>,
    /// The next placeholder number (numbered styles).
    next: usize,
}

/// Whether lists bind as one array parameter.
fn arrays(d: Dialect) -> bool {
    d == Dialect::Postgres
}

impl AttrBinding {
    /// An empty binding whose numbered placeholders start at `first`.
    pub(crate) fn starting_at(first: usize) -> AttrBinding {
        AttrBinding {
            slots: Vec::new(),
            next: first,
        }
    }

    fn placeholder(&mut self, style: ParamStyle, k: usize, element: Option<usize>) -> String {
        let named = |prefix: char| match element {
            Some(i) => format!("{prefix}sluice_a{k}_{}", i + 1),
            None => format!("{prefix}sluice_a{k}"),
        };
        match style {
            ParamStyle::DollarNumbered | ParamStyle::ColonNumbered => {
                let n = self.next;
                self.next += 1;
                if style == ParamStyle::DollarNumbered {
                    format!("${n}")
                } else {
                    format!(":{n}")
                }
            }
            ParamStyle::AtNamed => named('@'),
            ParamStyle::ColonNamed => named(':'),
            // Not reached: `Catalog::new` refuses attribute filters on inline-literal catalogs.
            ParamStyle::InlineLiteral => String::new(),
        }
    }

    /// The slot of attribute `name` (valued `value`), made on first use.
    pub(crate) fn slot(
        &mut self,
        d: Dialect,
        style: ParamStyle,
        name: &str,
        value: &AttributeValue,
    ) -> &AttrSlot {
        if let Some(i) = self.slots.iter().position(|s| s.name == name) {
            return &self.slots[i];
        }
        let k = self.slots.len() + 1;
        let list = matches!(
            value,
            AttributeValue::TextList(_) | AttributeValue::IntegerList(_)
        );
        let array = list && arrays(d);
        let texts = if list && !array {
            (0..value.len())
                .map(|i| self.placeholder(style, k, Some(i)))
                .collect()
        } else {
            vec![self.placeholder(style, k, None)]
        };
        self.slots.push(AttrSlot {
            name: name.to_string(),
            texts,
            array,
            value: value.clone(),
        });
        &self.slots[k - 1]
    }

    /// Whether `text` is one of its placeholders.
    pub(crate) fn allows(&self, text: &str) -> bool {
        self.slots.iter().any(|s| s.texts.iter().any(|t| t == text))
    }

    /// The bind parameters, in placeholder order.
    pub(crate) fn params(&self, style: ParamStyle) -> Vec<crate::BindParam> {
        let named = matches!(style, ParamStyle::AtNamed | ParamStyle::ColonNamed);
        let mut out = Vec::new();
        for s in &self.slots {
            let mut push = |text: &str, element: Option<usize>, value: BoundValue| {
                out.push(crate::BindParam {
                    name: named.then(|| text[1..].to_string()),
                    source: ParamSource::Attribute {
                        name: s.name.clone(),
                        element,
                    },
                    value,
                });
            };
            match (&s.value, s.array) {
                (AttributeValue::Text(v), _) => {
                    push(&s.texts[0], None, BoundValue::Text(v.clone()))
                }
                (AttributeValue::Integer(v), _) => push(&s.texts[0], None, BoundValue::Integer(*v)),
                (AttributeValue::TextList(l), true) => {
                    push(&s.texts[0], None, BoundValue::TextList(l.clone()));
                }
                (AttributeValue::IntegerList(l), true) => {
                    push(&s.texts[0], None, BoundValue::IntegerList(l.clone()));
                }
                (AttributeValue::TextList(l), false) => {
                    for (i, (t, v)) in s.texts.iter().zip(l).enumerate() {
                        push(t, Some(i), BoundValue::Text(v.clone()));
                    }
                }
                (AttributeValue::IntegerList(l), false) => {
                    for (i, (t, v)) in s.texts.iter().zip(l).enumerate() {
                        push(t, Some(i), BoundValue::Integer(*v));
                    }
                }
            }
        }
        out
    }
}

/// A placeholder as an expression (BigQuery's `@name` reads as an identifier).
pub(crate) fn placeholder_expr(text: &str, style: ParamStyle) -> Expr {
    if style == ParamStyle::AtNamed {
        Expr::Identifier(Ident::new(text))
    } else {
        Expr::value(Value::Placeholder(text.to_string()))
    }
}

fn literal_expr(l: &FilterLiteral) -> Expr {
    match l {
        FilterLiteral::Text(s) => Expr::value(Value::SingleQuotedString(s.clone())),
        FilterLiteral::Integer(i) => Expr::value(crate::rewrite::number(&i.to_string())),
    }
}

/// The conjunct a filter adds to a wrapper: `"col" = <p>`, `"col" = ANY(<p>)`, `"col" IN
/// (<p1>, …)`, `FALSE` (an empty list bound element by element), or the same with constants.
/// `slot` is the attribute's, for an attribute filter.
pub(crate) fn conjunct(
    d: Dialect,
    style: ParamStyle,
    f: &RowFilter,
    slot: Option<&AttrSlot>,
) -> Expr {
    let column = Expr::Identifier(Ident::with_quote(d.quote(), f.column.as_str()));
    let eq = |right: Expr| Expr::BinaryOp {
        left: Box::new(column.clone()),
        op: BinaryOperator::Eq,
        right: Box::new(right),
    };
    let in_list = |list: Vec<Expr>| Expr::InList {
        expr: Box::new(column.clone()),
        list,
        negated: false,
    };
    match (&f.operand, slot) {
        (FilterOperand::Values(v), _) if v.len() == 1 => eq(literal_expr(&v[0])),
        (FilterOperand::Values(v), _) => in_list(v.iter().map(literal_expr).collect()),
        (FilterOperand::Attribute { .. }, Some(s)) if s.array => Expr::AnyOp {
            left: Box::new(column.clone()),
            compare_op: BinaryOperator::Eq,
            right: Box::new(placeholder_expr(&s.texts[0], style)),
            is_some: false,
        },
        (FilterOperand::Attribute { ty, .. }, Some(s)) if ty.is_list() => {
            if s.texts.is_empty() {
                Expr::value(Value::Boolean(false))
            } else {
                in_list(s.texts.iter().map(|t| placeholder_expr(t, style)).collect())
            }
        }
        (FilterOperand::Attribute { .. }, Some(s)) => eq(placeholder_expr(&s.texts[0], style)),
        // Not reached: an attribute filter always has its slot.
        (FilterOperand::Attribute { .. }, None) => Expr::value(Value::Boolean(false)),
    }
}

/// The caller's value of the attribute a filter on `table` needs: refused when it is missing
/// or not of the declared type.
pub(crate) fn caller_value<'c>(
    attributes: &'c Attributes,
    table: &crate::TableName,
    name: &str,
    ty: AttributeType,
) -> Result<&'c AttributeValue, PolicyError> {
    match attributes.get(name) {
        None => Err(PolicyError::AttributeMissing {
            table: table.to_string(),
            attribute: name.to_string(),
        }),
        Some(v) if !v.fits(ty) => Err(PolicyError::AttributeInvalid {
            attribute: name.to_string(),
            expected: ty.name(),
        }),
        Some(v) => Ok(v),
    }
}

/// What the verifiers expect: the conjuncts the row filters of `rule` that apply to a caller
/// with `groups` add, in order, each bound to the caller's own attribute value through the
/// placeholders `binding` holds for it.
pub(crate) fn expected(
    catalog: &crate::Catalog,
    rule: &crate::TableRule,
    groups: &[String],
    binding: &crate::TenantBinding,
    attributes: &Attributes,
) -> Result<Vec<Expr>, String> {
    let (d, style) = (catalog.dialect(), catalog.param_style());
    let mut out = Vec::new();
    for f in rule.filters_for(groups) {
        let slot = match f.attribute() {
            Some((name, ty)) => {
                let slot = binding
                    .attrs()
                    .and_then(|a| a.slots.iter().find(|s| s.name == name))
                    .ok_or_else(|| format!("no parameter for the attribute {name}"))?;
                let own =
                    caller_value(attributes, &rule.name, name, ty).map_err(|e| e.to_string())?;
                let elements = if slot.array { 1 } else { own.len() };
                if slot.value != *own || (ty.is_list() && slot.texts.len() != elements) {
                    return Err(format!("the attribute {name} is bound to another value"));
                }
                Some(slot)
            }
            None => None,
        };
        out.push(conjunct(d, style, f, slot));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn types(name: &str) -> Option<AttributeType> {
        match name {
            "region" => Some(AttributeType::Text),
            "accounts" => Some(AttributeType::IntegerList),
            "codes" => Some(AttributeType::TextList),
            _ => None,
        }
    }

    #[test]
    fn the_four_forms_parse_and_nothing_else() {
        let f = RowFilter::parse("region = attr.region", &types).unwrap();
        assert_eq!(f.column, "region");
        assert_eq!(f.attribute(), Some(("region", AttributeType::Text)));
        let f = RowFilter::parse("  \"Account Id\"  in attr.accounts ", &types).unwrap();
        assert_eq!(f.column, "Account Id");
        assert_eq!(f.text, "\"Account Id\"  in attr.accounts");
        let f = RowFilter::parse("status IN ('open', 'shipped', 5)", &types).unwrap();
        assert_eq!(
            f.operand,
            FilterOperand::Values(vec![
                FilterLiteral::Text("open".into()),
                FilterLiteral::Text("shipped".into()),
                FilterLiteral::Integer(5)
            ])
        );
        let f = RowFilter::parse("kind = 'retail'", &types).unwrap();
        assert_eq!(
            f.operand,
            FilterOperand::Values(vec![FilterLiteral::Text("retail".into())])
        );
        for (bad, why) in [
            ("region = attr.nope", "not declared"),
            ("region = attr.accounts", "compare it with IN"),
            ("region IN attr.region", "compare it with ="),
            ("region = 'it''s'", "unexpected text"),
            ("region = 'a\\b'", "without quotes"),
            ("region = 'x' OR 1 = 1", "unexpected text"),
            ("region LIKE attr.region", "expected `=` or `IN`"),
            ("region IN ()", "expected a constant"),
            ("region = 99999999999999999999", "out of range"),
            ("= attr.region", "expected a column"),
            ("level = -5", "non-negative"),
            ("region = attr.region -- x", "unexpected text"),
        ] {
            let e = RowFilter::parse(bad, &types).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn values_fit_their_declared_type_only() {
        use serde_json::json;
        let t = AttributeType::Text;
        assert_eq!(
            AttributeValue::from_json(&json!("emea"), t),
            Some(AttributeValue::Text("emea".into()))
        );
        for bad in [
            json!(5),
            json!(["a"]),
            json!(""),
            json!("a\nb"),
            json!(null),
        ] {
            assert_eq!(AttributeValue::from_json(&bad, t), None, "{bad}");
        }
        let l = AttributeType::IntegerList;
        assert_eq!(
            AttributeValue::from_json(&json!([1, 2]), l),
            Some(AttributeValue::IntegerList(vec![1, 2]))
        );
        assert_eq!(AttributeValue::from_json(&json!([1, "2"]), l), None);
        assert_eq!(AttributeValue::from_json(&json!(1), l), None);
        let long: Vec<i64> = (0..=MAX_ATTRIBUTE_ITEMS as i64).collect();
        assert_eq!(AttributeValue::from_json(&json!(long), l), None);
        // Stored principals round-trip; an empty list fits either list type.
        let empty: AttributeValue = serde_json::from_str("[]").unwrap();
        assert!(empty.fits(AttributeType::IntegerList) && empty.fits(AttributeType::TextList));
        assert!(!empty.fits(AttributeType::Text));
        let text: AttributeValue = serde_json::from_str("\"x\"").unwrap();
        assert!(text.fits(AttributeType::Text) && !text.fits(AttributeType::TextList));
    }

    #[test]
    fn groups_choose_who_is_filtered() {
        let mut f = RowFilter::parse("region = attr.region", &types).unwrap();
        f.except = vec!["managers".into()];
        let g = |gs: &[&str]| gs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(f.applies_to(&g(&["analysts"])));
        assert!(f.applies_to(&[]));
        assert!(!f.applies_to(&g(&["analysts", "managers"])));
        f.groups = Some(g(&["interns"]));
        assert!(!f.applies_to(&g(&["analysts"])));
        assert!(f.applies_to(&g(&["interns"])));
        assert!(!f.applies_to(&g(&["interns", "managers"])));
    }

    #[test]
    fn both_verifiers_refuse_a_wrapper_without_exactly_its_filters() {
        use crate::{
            BindParam, Caller, Catalog, TableName, TableRule, TenantBinding, params::CallerParams,
        };
        let mut rule = TableRule::protected(
            TableName {
                catalog: None,
                schema: "public".into(),
                table: "orders".into(),
            },
            "tenant_id",
            vec![
                "id".into(),
                "tenant_id".into(),
                "region".into(),
                "account_id".into(),
            ],
        );
        let mut exempt = RowFilter::parse("region = attr.region", &types).unwrap();
        exempt.except = vec!["managers".into()];
        rule.filters = vec![
            exempt,
            RowFilter::parse("account_id IN attr.accounts", &types).unwrap(),
        ];
        let catalog = Catalog::new(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            None,
            "public".into(),
            vec![rule],
        )
        .unwrap();
        let region = AttributeValue::Text("emea".into());
        let accounts = AttributeValue::IntegerList(vec![1, 2]);
        let mut attributes = Attributes::new();
        attributes.insert("region".into(), region.clone());
        attributes.insert("accounts".into(), accounts.clone());
        let groups: Vec<String> = vec![];
        let caller = Caller {
            tenant: "A",
            groups: &groups,
            row_limit: None,
            attributes: &attributes,
        };
        let binding = |attrs: AttrBinding| TenantBinding::Placeholder {
            text: "$1".into(),
            param: BindParam {
                name: None,
                source: ParamSource::Tenant,
                value: BoundValue::Tenant("A".into()),
            },
            caller: CallerParams {
                count: 0,
                style: ParamStyle::DollarNumbered,
            },
            attrs,
        };
        let mut attrs = AttrBinding::starting_at(2);
        attrs.slot(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            "region",
            &region,
        );
        attrs.slot(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            "accounts",
            &accounts,
        );
        let good = binding(attrs.clone());
        let r = crate::rewrite("SELECT id FROM orders", &catalog, &caller).unwrap();
        let wrapped = |inside: &str| {
            format!(
                r#"SELECT "id" FROM (SELECT "id", "tenant_id", "region", "account_id" FROM "public"."orders" WHERE {inside}) AS "orders""#
            )
        };
        let honest =
            r#"("tenant_id" = $1) AND ("region" = $2) AND ("account_id" = ANY ($3)) OFFSET 0"#;
        assert_eq!(r.sql, wrapped(honest));
        let both = |sql: &str, b: &TenantBinding, c: &Caller<'_>| {
            (
                crate::verify::verify_tree(sql, &catalog, b, c).is_ok(),
                crate::pgverify::verify(sql, &catalog, b, c).is_ok(),
            )
        };
        assert_eq!(both(&r.sql, &good, &caller), (true, true));
        for tampered in [
            // A filter dropped, reordered, or its parameters swapped.
            r#"("tenant_id" = $1) AND ("account_id" = ANY ($3)) OFFSET 0"#,
            r#"("tenant_id" = $1) AND ("region" = $2) OFFSET 0"#,
            r#"("tenant_id" = $1) AND ("account_id" = ANY ($3)) AND ("region" = $2) OFFSET 0"#,
            r#"("tenant_id" = $1) AND ("region" = $3) AND ("account_id" = ANY ($2)) OFFSET 0"#,
            // Weakened: another operator, another column, an OR, no fence.
            r#"("tenant_id" = $1) AND ("region" <> $2) AND ("account_id" = ANY ($3)) OFFSET 0"#,
            r#"("tenant_id" = $1) AND ("id" = $2) AND ("account_id" = ANY ($3)) OFFSET 0"#,
            r#"("tenant_id" = $1) AND (("region" = $2) OR TRUE) AND ("account_id" = ANY ($3)) OFFSET 0"#,
            r#"("tenant_id" = $1) AND ("region" = $2) AND ("account_id" = ANY ($3))"#,
            r#"("tenant_id" = $1) AND ("region" = $2) AND ("account_id" <> ALL ($3)) OFFSET 0"#,
        ] {
            assert_eq!(
                both(&wrapped(tampered), &good, &caller),
                (false, false),
                "{tampered}"
            );
        }
        // The parameters must hold the caller's own values.
        let mut other = AttrBinding::starting_at(2);
        other.slot(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            "region",
            &AttributeValue::Text("apac".into()),
        );
        other.slot(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            "accounts",
            &accounts,
        );
        assert_eq!(both(&r.sql, &binding(other), &caller), (false, false));
        // An exempt caller's wrapper has no region filter, and one that has it is refused.
        let managers = vec!["managers".to_string()];
        let manager = Caller {
            groups: &managers,
            ..caller
        };
        let mut mine = AttrBinding::starting_at(2);
        mine.slot(
            Dialect::Postgres,
            ParamStyle::DollarNumbered,
            "accounts",
            &accounts,
        );
        let exempt = wrapped(r#"("tenant_id" = $1) AND ("account_id" = ANY ($2)) OFFSET 0"#);
        assert_eq!(
            both(&exempt, &binding(mine.clone()), &manager),
            (true, true)
        );
        assert_eq!(both(&exempt, &binding(mine), &caller), (false, false));
    }
}
