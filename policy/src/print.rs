//! The canonical printer: the only place SQL text is made from a policy-checked tree.
//!
//! sqlparser's own `Display` re-emits some literals without re-escaping them and glues tokens
//! (`- -1` becomes `--1`, a comment in PostgreSQL), so text the policy saw inside a literal
//! could become live SQL. This printer covers exactly the node kinds the rewriter accepts and
//! refuses anything else. Its output is canonical and unambiguous in every target dialect:
//!
//! - every identifier is quoted (the dialect's quote, embedded quotes doubled), in the form the
//!   warehouse resolves it to; identifiers holding control characters, backslashes or (backtick
//!   dialects) backticks are refused;
//! - literals come from a closed set: numbers (checked digit by digit), booleans, `NULL`, and
//!   strings escaped by the target's own rules (PostgreSQL, DataFusion, Snowflake: `'…'` with
//!   `''`; BigQuery, Databricks: `'…'`, or `"…"` for a value holding `'`, never a backslash);
//! - every compound operand is parenthesized, so no dialect's precedence rules matter;
//! - tokens are separated by one space, except `(`/`)`/`,`/`.` and a function name before its
//!   `(`, so no `--`, `/*`, `*/`, `//` or `#` can arise from adjacent tokens.
//!
//! [`check_text`] re-checks those lexical properties on the printed text with a scanner that
//! shares no code with the printer or with sqlparser.

use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, Cte, CteAsMaterialized, DataType, DateTimeField,
    Distinct, DuplicateTreatment, ExcludeSelectItem, Expr, ExtractSyntax, Fetch, Function,
    FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, GroupByExpr, Ident,
    Join, JoinConstraint, JoinOperator, LimitClause, NamedWindowDefinition, NamedWindowExpr,
    NullTreatment, ObjectName, ObjectNamePart, Offset, OffsetRows, OrderBy, OrderByExpr,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    SetQuantifier, Statement, TableAlias, TableFactor, TableSampleKind, TableWithJoins,
    TrimWhereField, UnaryOperator, Value, WildcardAdditionalOptions, WindowFrameBound, WindowSpec,
    WindowType,
};

use crate::TenantBinding;
use crate::dialect::Dialect;
use crate::error::PolicyError;

type R = Result<(), PolicyError>;

fn refuse(what: impl Into<String>) -> PolicyError {
    PolicyError::Unsupported(what.into())
}

/// Longest printed text: the rewrite expands each table reference into a wrapper, so a short
/// query can print long; past this it is `query_too_complex`.
pub const MAX_PRINTED_BYTES: usize = 4 << 20;

/// Longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`); longer ones are truncated by
/// the server, so two names sluice tells apart could resolve to one.
const PG_MAX_IDENT_BYTES: usize = 63;

/// Prints `statement` canonically for `dialect`. `binding` says which placeholders may appear:
/// the tenant parameter's (`$1`, `:1`, `:sluice_tenant`, `@sluice_tenant`) and the caller's
/// parameters sent.
pub(crate) fn statement(
    statement: &Statement,
    dialect: Dialect,
    binding: &TenantBinding,
) -> Result<String, PolicyError> {
    let Statement::Query(q) = statement else {
        return Err(PolicyError::StatementNotAllowed("this".into()));
    };
    let mut p = Printer {
        d: dialect,
        binding: Some(binding),
        out: String::with_capacity(256),
        glue: true,
    };
    p.query(q)?;
    if p.out.len() > MAX_PRINTED_BYTES {
        return Err(PolicyError::TooComplex(format!(
            "the rewritten query would be longer than {MAX_PRINTED_BYTES} bytes"
        )));
    }
    Ok(p.out)
}

/// Prints a select list canonically (the verifier's expected wrapper projection).
pub(crate) fn select_items(items: &[SelectItem], dialect: Dialect) -> Result<String, PolicyError> {
    let mut p = Printer {
        d: dialect,
        binding: None,
        out: String::new(),
        glue: true,
    };
    p.list(items, |p, i| p.select_item(i))?;
    Ok(p.out)
}

struct Printer<'a> {
    d: Dialect,
    binding: Option<&'a TenantBinding>,
    out: String,
    /// The next token follows the previous one without a space (after `(`, `.`, a function
    /// name, and at the start).
    glue: bool,
}

impl Printer<'_> {
    /// Emits a token, separated by one space unless glued. (Past [`MAX_PRINTED_BYTES`] the
    /// text is refused at the end; nothing more is appended.)
    fn t(&mut self, s: &str) {
        if self.out.len() > MAX_PRINTED_BYTES {
            return;
        }
        if !self.glue {
            self.out.push(' ');
        }
        self.out.push_str(s);
        self.glue = false;
    }

    fn open(&mut self) {
        self.t("(");
        self.glue = true;
    }

    fn close(&mut self) {
        self.out.push(')');
        self.glue = false;
    }

    fn comma(&mut self) {
        self.out.push(',');
        self.glue = false;
    }

    fn dot(&mut self) {
        self.out.push('.');
        self.glue = true;
    }

    /// A bare word: keywords, function names, type names. Only `[A-Za-z_][A-Za-z0-9_ ]*`.
    fn word(&mut self, w: &str) -> R {
        let ok = w
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
        if !ok {
            return Err(refuse(format!("the word {w:?}")));
        }
        self.t(w);
        Ok(())
    }

    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T) -> R) -> R {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.comma();
            }
            f(self, item)?;
        }
        Ok(())
    }

    // ---- identifiers and literals -------------------------------------------------------

    /// A quoted identifier holding `name` exactly (the already-resolved form).
    fn quoted(&mut self, name: &str) -> R {
        let q = self.d.quote();
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            return Err(refuse(
                "an empty identifier or one holding control characters",
            ));
        }
        if q == '`' && (name.contains('`') || name.contains('\\')) {
            return Err(refuse("backticks and backslashes in identifiers"));
        }
        if matches!(self.d, Dialect::Postgres | Dialect::DataFusion)
            && name.len() > PG_MAX_IDENT_BYTES
        {
            return Err(refuse(format!(
                "identifiers longer than {PG_MAX_IDENT_BYTES} bytes"
            )));
        }
        let mut s = String::with_capacity(name.len() + 2);
        s.push(q);
        for c in name.chars() {
            if c == q {
                s.push(q);
            }
            s.push(c);
        }
        s.push(q);
        self.t(&s);
        Ok(())
    }

    /// An identifier as the warehouse resolves it (unquoted names folded), quoted. An unquoted
    /// `@name` is never a name (aliases, tables, windows): parameters are expressions only.
    fn ident(&mut self, i: &Ident) -> R {
        if i.quote_style.is_none() && i.value.starts_with('@') {
            return Err(refuse("query parameters and system variables (@name)"));
        }
        let n = self.d.normalize(i);
        self.quoted(&n)
    }

    /// An identifier in expression position: a column, or BigQuery's `@name` parameter (which
    /// sqlparser reads as an identifier) when it is the tenant's or a caller parameter sent.
    fn expr_ident(&mut self, i: &Ident) -> R {
        if i.quote_style.is_none() && i.value.starts_with('@') {
            return match self.binding {
                Some(b) if b.allows(&i.value) && self.d == Dialect::BigQuery => {
                    let text = i.value.clone();
                    self.t(&text);
                    Ok(())
                }
                _ => Err(refuse("query parameters and system variables (@name)")),
            };
        }
        self.ident(i)
    }

    fn object_name(&mut self, name: &ObjectName) -> R {
        for (k, part) in name.0.iter().enumerate() {
            if k > 0 {
                self.dot();
            }
            match part {
                ObjectNamePart::Identifier(i) => self.ident(i)?,
                ObjectNamePart::Function(_) => return Err(refuse("function calls in names")),
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> R {
        if s.contains('\0') {
            return Err(refuse("NUL characters in string literals"));
        }
        let text = match self.d {
            Dialect::Postgres | Dialect::DataFusion => format!("'{}'", s.replace('\'', "''")),
            Dialect::Snowflake => {
                if s.contains('\\') || s.chars().any(char::is_control) {
                    return Err(refuse(
                        "backslashes and control characters in string literals",
                    ));
                }
                format!("'{}'", s.replace('\'', "''"))
            }
            Dialect::BigQuery | Dialect::Databricks => {
                if s.contains('\\') || s.chars().any(char::is_control) {
                    return Err(refuse(
                        "backslashes and control characters in string literals",
                    ));
                }
                // Spark substitutes `${…}` variables in the raw text, inside literals too; and
                // with ANSI double-quoted identifiers on, `"…"` is not a string there.
                if self.d == Dialect::Databricks && (s.contains("${") || s.contains('\'')) {
                    return Err(refuse(
                        "`${` and single quotes in Databricks string literals",
                    ));
                }
                match (s.contains('\''), s.contains('"')) {
                    (false, _) => format!("'{s}'"),
                    (true, false) => format!("\"{s}\""),
                    (true, true) => {
                        return Err(refuse(
                            "string literals holding both kinds of quotes in this dialect",
                        ));
                    }
                }
            }
        };
        self.t(&text);
        Ok(())
    }

    fn number(&mut self, n: &str, long: bool) -> R {
        if long || !is_plain_number(n) {
            return Err(refuse(format!("the number literal {n:?}")));
        }
        self.t(n);
        Ok(())
    }

    fn value(&mut self, v: &Value) -> R {
        match v {
            Value::Number(n, long) => self.number(n, *long),
            Value::SingleQuotedString(s) => self.string(s),
            // BigQuery and Databricks read "..." as a string; PostgreSQL reads $$...$$ as one.
            Value::DoubleQuotedString(s)
                if matches!(self.d, Dialect::BigQuery | Dialect::Databricks) =>
            {
                self.string(s)
            }
            Value::DollarQuotedString(s)
                if matches!(self.d, Dialect::Postgres | Dialect::DataFusion) =>
            {
                self.string(&s.value)
            }
            Value::Boolean(true) => self.word("TRUE"),
            Value::Boolean(false) => self.word("FALSE"),
            Value::Null => self.word("NULL"),
            Value::Placeholder(p) => match self.binding {
                Some(b) if b.allows(p) => {
                    self.t(p);
                    Ok(())
                }
                _ => Err(refuse("bind parameters in the query text")),
            },
            other => Err(refuse(format!("the literal kind of {other}"))),
        }
    }

    fn data_type(&mut self, t: &DataType) -> R {
        // The rewriter admits only built-in types; their text is keywords and numbers.
        crate::rewrite::check_data_type(t)?;
        let s = t.to_string();
        keyword_text(&s)?;
        self.t(&s);
        Ok(())
    }

    fn datetime_field(&mut self, f: &DateTimeField) -> R {
        match f {
            DateTimeField::Custom(i) | DateTimeField::Week(Some(i)) if i.quote_style.is_some() => {
                Err(refuse("quoted date parts"))
            }
            other => {
                let s = other.to_string();
                keyword_text(&s)?;
                self.t(&s);
                Ok(())
            }
        }
    }

    // ---- queries ------------------------------------------------------------------------

    fn query(&mut self, q: &Query) -> R {
        let Query {
            with,
            body,
            order_by,
            limit_clause,
            fetch,
            locks,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = q;
        if !locks.is_empty()
            || for_clause.is_some()
            || settings.is_some()
            || format_clause.is_some()
            || !pipe_operators.is_empty()
        {
            return Err(refuse("query clauses outside the allow-list"));
        }
        if let Some(with) = with {
            self.word("WITH")?;
            if with.recursive {
                self.word("RECURSIVE")?;
            }
            self.list(&with.cte_tables, |p, c| p.cte(c))?;
        }
        self.set_expr(body)?;
        if let Some(OrderBy { kind, interpolate }) = order_by {
            if interpolate.is_some() {
                return Err(refuse("ORDER BY ... INTERPOLATE"));
            }
            self.word("ORDER BY")?;
            match kind {
                OrderByKind::All(_) => return Err(refuse("ORDER BY ALL")),
                OrderByKind::Expressions(exprs) => self.list(exprs, |p, e| p.order_by_expr(e))?,
            }
        }
        match limit_clause {
            None => {}
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(refuse("LIMIT BY"));
                }
                if let Some(l) = limit {
                    self.word("LIMIT")?;
                    self.operand(l)?;
                }
                if let Some(Offset { value, rows }) = offset {
                    self.word("OFFSET")?;
                    self.operand(value)?;
                    match rows {
                        OffsetRows::None => {}
                        OffsetRows::Row => self.word("ROW")?,
                        OffsetRows::Rows => self.word("ROWS")?,
                    }
                }
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                self.word("LIMIT")?;
                self.operand(limit)?;
                self.word("OFFSET")?;
                self.operand(offset)?;
            }
        }
        if let Some(Fetch {
            with_ties,
            percent,
            quantity,
        }) = fetch
        {
            self.word("FETCH FIRST")?;
            if let Some(n) = quantity {
                self.operand(n)?;
                if *percent {
                    self.word("PERCENT")?;
                }
            }
            self.word(if *with_ties {
                "ROWS WITH TIES"
            } else {
                "ROWS ONLY"
            })?;
        }
        Ok(())
    }

    fn cte(&mut self, c: &Cte) -> R {
        let Cte {
            alias,
            query,
            from,
            materialized,
            closing_paren_token: _,
        } = c;
        if from.is_some() {
            return Err(refuse("CTE FROM clauses"));
        }
        self.table_alias(alias, false)?;
        self.word("AS")?;
        match materialized {
            None => {}
            Some(CteAsMaterialized::Materialized) => self.word("MATERIALIZED")?,
            Some(CteAsMaterialized::NotMaterialized) => self.word("NOT MATERIALIZED")?,
        }
        self.open();
        self.query(query)?;
        self.close();
        Ok(())
    }

    fn set_expr(&mut self, s: &SetExpr) -> R {
        match s {
            SetExpr::Select(select) => self.select(select),
            SetExpr::Query(q) => {
                self.open();
                self.query(q)?;
                self.close();
                Ok(())
            }
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                self.set_operand(left)?;
                self.word(&op.to_string())?;
                match set_quantifier {
                    SetQuantifier::None => {}
                    SetQuantifier::All => self.word("ALL")?,
                    SetQuantifier::Distinct => self.word("DISTINCT")?,
                    other => return Err(refuse(format!("the set quantifier {other}"))),
                }
                self.set_operand(right)
            }
            SetExpr::Values(values) => {
                if values.explicit_row || values.value_keyword {
                    return Err(refuse("VALUES ROW(...)"));
                }
                self.word("VALUES")?;
                self.list(&values.rows, |p, row| {
                    p.open();
                    p.list(&row.content, |p, e| p.expr(e))?;
                    p.close();
                    Ok(())
                })
            }
            _ => Err(PolicyError::StatementNotAllowed("data-modifying".into())),
        }
    }

    /// A side of a set operation: nested set operations are parenthesized.
    fn set_operand(&mut self, s: &SetExpr) -> R {
        if let SetExpr::SetOperation { .. } = s {
            self.open();
            self.set_expr(s)?;
            self.close();
            Ok(())
        } else {
            self.set_expr(s)
        }
    }

    fn select(&mut self, s: &Select) -> R {
        crate::rewrite::check_select_clauses(s)?;
        self.word("SELECT")?;
        match &s.distinct {
            None => {}
            Some(Distinct::All) => self.word("ALL")?,
            Some(Distinct::Distinct) => self.word("DISTINCT")?,
            Some(Distinct::On(exprs)) => {
                self.word("DISTINCT ON")?;
                self.open();
                self.list(exprs, |p, e| p.expr(e))?;
                self.close();
            }
        }
        self.list(&s.projection, |p, item| p.select_item(item))?;
        if !s.from.is_empty() {
            self.word("FROM")?;
            self.list(&s.from, |p, twj| p.table_with_joins(twj))?;
        }
        if let Some(e) = &s.selection {
            self.word("WHERE")?;
            self.expr(e)?;
        }
        match &s.group_by {
            GroupByExpr::All(m) if m.is_empty() => self.word("GROUP BY ALL")?,
            GroupByExpr::Expressions(exprs, m) if m.is_empty() => {
                if !exprs.is_empty() {
                    self.word("GROUP BY")?;
                    self.list(exprs, |p, e| p.expr(e))?;
                }
            }
            _ => return Err(refuse("GROUP BY modifiers")),
        }
        if let Some(e) = &s.having {
            self.word("HAVING")?;
            self.expr(e)?;
        }
        let window = |p: &mut Self| -> R {
            if !s.named_window.is_empty() {
                p.word("WINDOW")?;
                p.list(&s.named_window, |p, NamedWindowDefinition(name, w)| {
                    p.ident(name)?;
                    p.word("AS")?;
                    match w {
                        NamedWindowExpr::NamedWindow(other) => p.ident(other),
                        NamedWindowExpr::WindowSpec(spec) => {
                            p.open();
                            p.window_spec(spec)?;
                            p.close();
                            Ok(())
                        }
                    }
                })?;
            }
            Ok(())
        };
        if s.window_before_qualify {
            window(self)?;
        }
        if let Some(e) = &s.qualify {
            self.word("QUALIFY")?;
            self.expr(e)?;
        }
        if !s.window_before_qualify {
            window(self)?;
        }
        Ok(())
    }

    fn select_item(&mut self, item: &SelectItem) -> R {
        match item {
            SelectItem::UnnamedExpr(e) => self.expr(e),
            SelectItem::ExprWithAlias { expr, alias } => {
                self.expr(expr)?;
                self.word("AS")?;
                self.ident(alias)
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), o) => {
                self.object_name(n)?;
                self.dot();
                self.t("*");
                self.wildcard_modifiers(o)
            }
            SelectItem::Wildcard(o) => {
                self.t("*");
                self.wildcard_modifiers(o)
            }
            _ => Err(refuse("this select item")),
        }
    }

    /// A select-list star's modifiers (`rewrite::check_wildcard_modifiers`), each with a
    /// parenthesized list: `EXCLUDE ("a", "b")`, `EXCEPT (…)`, `REPLACE (<expr> AS "a")`.
    fn wildcard_modifiers(&mut self, o: &WildcardAdditionalOptions) -> R {
        crate::rewrite::check_wildcard_modifiers(self.d, o)?;
        if let Some(ex) = &o.opt_exclude {
            let names: Vec<&ObjectName> = match ex {
                ExcludeSelectItem::Single(n) => vec![n],
                ExcludeSelectItem::Multiple(ns) => ns.iter().collect(),
            };
            self.word("EXCLUDE")?;
            self.open();
            self.list(&names, |p, n| match n.0.as_slice() {
                [ObjectNamePart::Identifier(i)] => p.ident(i),
                _ => Err(refuse("a qualified name in EXCLUDE")),
            })?;
            self.close();
        }
        if let Some(ex) = &o.opt_except {
            let names: Vec<&Ident> = std::iter::once(&ex.first_element)
                .chain(&ex.additional_elements)
                .collect();
            self.word("EXCEPT")?;
            self.open();
            self.list(&names, |p, i| p.ident(i))?;
            self.close();
        }
        if let Some(rep) = &o.opt_replace {
            self.word("REPLACE")?;
            self.open();
            self.list(&rep.items, |p, item| {
                p.expr(&item.expr)?;
                p.word("AS")?;
                p.ident(&item.column_name)
            })?;
            self.close();
        }
        Ok(())
    }

    fn table_alias(&mut self, a: &TableAlias, with_as: bool) -> R {
        if a.at.is_some() {
            return Err(refuse("AT in table aliases"));
        }
        if with_as {
            self.word("AS")?;
        }
        self.ident(&a.name)?;
        if !a.columns.is_empty() {
            self.open();
            self.list(&a.columns, |p, c| {
                if c.data_type.is_some() {
                    return Err(refuse("typed alias columns"));
                }
                p.ident(&c.name)
            })?;
            self.close();
        }
        Ok(())
    }

    fn table_with_joins(&mut self, twj: &TableWithJoins) -> R {
        self.table_factor(&twj.relation)?;
        for Join {
            relation,
            global,
            join_operator,
        } in &twj.joins
        {
            if *global {
                return Err(refuse("GLOBAL joins"));
            }
            let (kw, c) = match join_operator {
                JoinOperator::Join(c) => ("JOIN", c),
                JoinOperator::Inner(c) => ("INNER JOIN", c),
                JoinOperator::Left(c) => ("LEFT JOIN", c),
                JoinOperator::LeftOuter(c) => ("LEFT OUTER JOIN", c),
                JoinOperator::Right(c) => ("RIGHT JOIN", c),
                JoinOperator::RightOuter(c) => ("RIGHT OUTER JOIN", c),
                JoinOperator::FullOuter(c) => ("FULL OUTER JOIN", c),
                JoinOperator::CrossJoin(c) => ("CROSS JOIN", c),
                JoinOperator::Semi(c) => ("SEMI JOIN", c),
                JoinOperator::LeftSemi(c) => ("LEFT SEMI JOIN", c),
                JoinOperator::RightSemi(c) => ("RIGHT SEMI JOIN", c),
                JoinOperator::Anti(c) => ("ANTI JOIN", c),
                JoinOperator::LeftAnti(c) => ("LEFT ANTI JOIN", c),
                JoinOperator::RightAnti(c) => ("RIGHT ANTI JOIN", c),
                _ => return Err(refuse("this join")),
            };
            if matches!(c, JoinConstraint::Natural) {
                self.word("NATURAL")?;
            }
            self.word(kw)?;
            self.table_factor(relation)?;
            match c {
                JoinConstraint::On(e) => {
                    self.word("ON")?;
                    self.expr(e)?;
                }
                JoinConstraint::Using(names) => {
                    self.word("USING")?;
                    self.open();
                    self.list(names, |p, n| p.object_name(n))?;
                    self.close();
                }
                JoinConstraint::Natural | JoinConstraint::None => {}
            }
        }
        Ok(())
    }

    fn table_factor(&mut self, tf: &TableFactor) -> R {
        match tf {
            TableFactor::Table {
                name,
                alias,
                args: None,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample,
                index_hints,
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                self.object_name(name)?;
                if let Some(a) = alias {
                    self.table_alias(a, true)?;
                }
                // `TABLESAMPLE BERNOULLI (<number>)` only (`rewrite::check_sample`), after the
                // alias, where PostgreSQL's grammar has it.
                if let Some(kind) = sample {
                    crate::rewrite::check_sample(self.d, kind)?;
                    let (TableSampleKind::BeforeTableAlias(s)
                    | TableSampleKind::AfterTableAlias(s)) = kind;
                    let Some(q) = &s.quantity else {
                        return Err(refuse("a sampling clause without a quantity"));
                    };
                    self.word("TABLESAMPLE BERNOULLI")?;
                    self.open();
                    self.expr(&q.value)?;
                    self.close();
                }
                Ok(())
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample: None,
            } => {
                if *lateral {
                    self.word("LATERAL")?;
                }
                self.open();
                self.query(subquery)?;
                self.close();
                if let Some(a) = alias {
                    self.table_alias(a, true)?;
                }
                Ok(())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => {
                self.open();
                self.table_with_joins(table_with_joins)?;
                self.close();
                Ok(())
            }
            // A set-returning function in FROM, in one form whichever way it was written:
            // `name(args) [WITH ORDINALITY] [AS alias]`, without LATERAL (PostgreSQL lets a
            // function in FROM see the items before it either way).
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                with_hints,
                version: None,
                with_ordinality,
                partitions,
                json_path: None,
                sample: None,
                index_hints,
            } if with_hints.is_empty()
                && partitions.is_empty()
                && index_hints.is_empty()
                && args.settings.is_none() =>
            {
                let exprs = positional(&args.args)?;
                self.table_function(name, &exprs, *with_ordinality, alias.as_ref())
            }
            TableFactor::Function {
                lateral: _,
                name,
                args,
                with_ordinality,
                alias,
            } => {
                let exprs = positional(args)?;
                self.table_function(name, &exprs, *with_ordinality, alias.as_ref())
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality,
            } => {
                let name = ObjectName::from(vec![Ident::new("unnest")]);
                let exprs: Vec<&Expr> = array_exprs.iter().collect();
                self.table_function(&name, &exprs, *with_ordinality, alias.as_ref())
            }
            _ => Err(refuse("this table expression")),
        }
    }

    fn table_function(
        &mut self,
        name: &ObjectName,
        args: &[&Expr],
        with_ordinality: bool,
        alias: Option<&TableAlias>,
    ) -> R {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return Err(PolicyError::FunctionNotAllowed(name.to_string()));
        };
        let resolved = crate::functions::resolve(self.d, ident)
            .filter(|n| {
                self.d == Dialect::Postgres
                    && crate::functions::TABLE_FUNCTIONS.contains(&n.as_str())
            })
            .ok_or_else(|| PolicyError::FunctionNotAllowed(name.to_string()))?;
        self.word(&resolved)?;
        self.glue = true;
        self.open();
        self.list(args, |p, e| p.expr(e))?;
        self.close();
        if with_ordinality {
            self.word("WITH ORDINALITY")?;
        }
        if let Some(a) = alias {
            self.table_alias(a, true)?;
        }
        Ok(())
    }

    fn order_by_expr(&mut self, o: &OrderByExpr) -> R {
        if o.with_fill.is_some() {
            return Err(refuse("ORDER BY ... WITH FILL"));
        }
        self.expr(&o.expr)?;
        match o.options.asc {
            None => {}
            Some(true) => self.word("ASC")?,
            Some(false) => self.word("DESC")?,
        }
        match o.options.nulls_first {
            None => {}
            Some(true) => self.word("NULLS FIRST")?,
            Some(false) => self.word("NULLS LAST")?,
        }
        Ok(())
    }

    fn window_spec(&mut self, w: &WindowSpec) -> R {
        if let Some(name) = &w.window_name {
            self.ident(name)?;
        }
        if !w.partition_by.is_empty() {
            self.word("PARTITION BY")?;
            self.list(&w.partition_by, |p, e| p.expr(e))?;
        }
        if !w.order_by.is_empty() {
            self.word("ORDER BY")?;
            self.list(&w.order_by, |p, e| p.order_by_expr(e))?;
        }
        if let Some(f) = &w.window_frame {
            self.word(&f.units.to_string())?;
            match &f.end_bound {
                None => self.frame_bound(&f.start_bound)?,
                Some(end) => {
                    self.word("BETWEEN")?;
                    self.frame_bound(&f.start_bound)?;
                    self.word("AND")?;
                    self.frame_bound(end)?;
                }
            }
        }
        Ok(())
    }

    fn frame_bound(&mut self, b: &WindowFrameBound) -> R {
        match b {
            WindowFrameBound::CurrentRow => self.word("CURRENT ROW"),
            WindowFrameBound::Preceding(None) => self.word("UNBOUNDED PRECEDING"),
            WindowFrameBound::Following(None) => self.word("UNBOUNDED FOLLOWING"),
            WindowFrameBound::Preceding(Some(e)) => {
                self.operand(e)?;
                self.word("PRECEDING")
            }
            WindowFrameBound::Following(Some(e)) => {
                self.operand(e)?;
                self.word("FOLLOWING")
            }
        }
    }

    // ---- expressions --------------------------------------------------------------------

    /// An operand: atoms as they are, anything compound in parentheses.
    fn operand(&mut self, e: &Expr) -> R {
        if is_atom(e) {
            self.expr(e)
        } else {
            self.open();
            self.expr(e)?;
            self.close();
            Ok(())
        }
    }

    fn not(&mut self, negated: bool) -> R {
        if negated { self.word("NOT") } else { Ok(()) }
    }

    fn escape(&mut self, escape: &Option<sqlparser::ast::ValueWithSpan>) -> R {
        if let Some(v) = escape {
            self.word("ESCAPE")?;
            match &v.value {
                Value::SingleQuotedString(s) => self.string(s)?,
                _ => return Err(refuse("a non-string ESCAPE")),
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> R {
        match e {
            Expr::Identifier(i) => self.expr_ident(i),
            Expr::CompoundIdentifier(parts) => {
                for (k, i) in parts.iter().enumerate() {
                    if k > 0 {
                        self.dot();
                    }
                    self.ident(i)?;
                }
                Ok(())
            }
            Expr::Nested(x) => {
                self.open();
                self.expr(x)?;
                self.close();
                Ok(())
            }
            Expr::IsFalse(x) => self.postfix(x, "IS FALSE"),
            Expr::IsNotFalse(x) => self.postfix(x, "IS NOT FALSE"),
            Expr::IsTrue(x) => self.postfix(x, "IS TRUE"),
            Expr::IsNotTrue(x) => self.postfix(x, "IS NOT TRUE"),
            Expr::IsNull(x) => self.postfix(x, "IS NULL"),
            Expr::IsNotNull(x) => self.postfix(x, "IS NOT NULL"),
            Expr::IsUnknown(x) => self.postfix(x, "IS UNKNOWN"),
            Expr::IsNotUnknown(x) => self.postfix(x, "IS NOT UNKNOWN"),
            Expr::IsDistinctFrom(a, b) => {
                self.operand(a)?;
                self.word("IS DISTINCT FROM")?;
                self.operand(b)
            }
            Expr::IsNotDistinctFrom(a, b) => {
                self.operand(a)?;
                self.word("IS NOT DISTINCT FROM")?;
                self.operand(b)
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                self.operand(expr)?;
                self.not(*negated)?;
                self.word("IN")?;
                self.open();
                self.list(list, |p, e| p.expr(e))?;
                self.close();
                Ok(())
            }
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => {
                self.operand(expr)?;
                self.not(*negated)?;
                self.word("IN")?;
                self.open();
                self.query(subquery)?;
                self.close();
                Ok(())
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                self.operand(expr)?;
                self.not(*negated)?;
                self.word("BETWEEN")?;
                self.operand(low)?;
                self.word("AND")?;
                self.operand(high)
            }
            Expr::BinaryOp { left, op, right } => {
                crate::rewrite::check_binary_operator(op)?;
                // `a AND b AND c`, `a + b + c`, `a || b || c`: these operators associate to the
                // left in every dialect, so a left operand of the same operator needs no
                // parentheses (and a long chain does not become a deep nest of them).
                match left.as_ref() {
                    Expr::BinaryOp { op: inner, .. }
                        if inner == op
                            && matches!(
                                op,
                                BinaryOperator::And
                                    | BinaryOperator::Or
                                    | BinaryOperator::Plus
                                    | BinaryOperator::Minus
                                    | BinaryOperator::Multiply
                                    | BinaryOperator::Divide
                                    | BinaryOperator::StringConcat
                            ) =>
                    {
                        self.expr(left)?
                    }
                    _ => self.operand(left)?,
                }
                let sym = op.to_string();
                if !sym.chars().all(|c| c.is_ascii_uppercase())
                    && !sym.chars().all(|c| "+-*/%|&^<>=!~#@?".contains(c))
                {
                    return Err(refuse(format!("the operator {sym}")));
                }
                self.t(&sym);
                self.operand(right)
            }
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => self.like("LIKE", *negated, *any, expr, pattern, escape_char),
            Expr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => self.like("ILIKE", *negated, *any, expr, pattern, escape_char),
            Expr::SimilarTo {
                negated,
                expr,
                pattern,
                escape_char,
            } => self.like("SIMILAR TO", *negated, false, expr, pattern, escape_char),
            Expr::AnyOp {
                left,
                compare_op,
                right,
                is_some,
            } => {
                crate::rewrite::check_binary_operator(compare_op)?;
                self.operand(left)?;
                self.t(&compare_op.to_string());
                self.word(if *is_some { "SOME" } else { "ANY" })?;
                self.paren_arg(right)
            }
            Expr::AllOp {
                left,
                compare_op,
                right,
            } => {
                crate::rewrite::check_binary_operator(compare_op)?;
                self.operand(left)?;
                self.t(&compare_op.to_string());
                self.word("ALL")?;
                self.paren_arg(right)
            }
            Expr::UnaryOp { op, expr } => {
                match op {
                    UnaryOperator::Plus => self.t("+"),
                    UnaryOperator::Minus => self.t("-"),
                    UnaryOperator::Not => self.word("NOT")?,
                    other => return Err(refuse(format!("the unary operator {other}"))),
                }
                self.operand(expr)
            }
            Expr::Cast {
                kind,
                expr,
                data_type,
                array: false,
                format: None,
            } => {
                self.word(match kind {
                    CastKind::Cast | CastKind::DoubleColon => "CAST",
                    CastKind::TryCast => "TRY_CAST",
                    CastKind::SafeCast => "SAFE_CAST",
                })?;
                self.glue = true;
                self.open();
                self.expr(expr)?;
                self.word("AS")?;
                self.data_type(data_type)?;
                self.close();
                Ok(())
            }
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => {
                self.operand(timestamp)?;
                self.word("AT TIME ZONE")?;
                self.operand(time_zone)
            }
            Expr::Extract {
                field,
                syntax,
                expr,
            } => {
                self.word("EXTRACT")?;
                self.glue = true;
                self.open();
                self.datetime_field(field)?;
                match syntax {
                    ExtractSyntax::From => self.word("FROM")?,
                    ExtractSyntax::Comma => self.comma(),
                }
                self.expr(expr)?;
                self.close();
                Ok(())
            }
            Expr::Ceil { expr, field } | Expr::Floor { expr, field } => {
                self.word(if matches!(e, Expr::Ceil { .. }) {
                    "CEIL"
                } else {
                    "FLOOR"
                })?;
                self.glue = true;
                self.open();
                self.expr(expr)?;
                match field {
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime) => {}
                    CeilFloorKind::DateTimeField(f) => {
                        self.word("TO")?;
                        self.datetime_field(f)?;
                    }
                    CeilFloorKind::Scale(v) => {
                        self.comma();
                        self.value(&v.value)?;
                    }
                }
                self.close();
                Ok(())
            }
            Expr::Position { expr, r#in } => {
                self.word("POSITION")?;
                self.glue = true;
                self.open();
                self.operand(expr)?;
                self.word("IN")?;
                self.operand(r#in)?;
                self.close();
                Ok(())
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                special,
                shorthand,
            } => {
                self.word(if *shorthand { "SUBSTR" } else { "SUBSTRING" })?;
                self.glue = true;
                self.open();
                self.expr(expr)?;
                if let Some(x) = substring_from {
                    if *special {
                        self.comma()
                    } else {
                        self.word("FROM")?
                    }
                    self.expr(x)?;
                }
                if let Some(x) = substring_for {
                    if *special {
                        self.comma()
                    } else {
                        self.word("FOR")?
                    }
                    self.expr(x)?;
                }
                self.close();
                Ok(())
            }
            Expr::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                self.word("TRIM")?;
                self.glue = true;
                self.open();
                if let Some(w) = trim_where {
                    self.word(match w {
                        TrimWhereField::Both => "BOTH",
                        TrimWhereField::Leading => "LEADING",
                        TrimWhereField::Trailing => "TRAILING",
                    })?;
                }
                if let Some(what) = trim_what {
                    self.expr(what)?;
                    self.word("FROM")?;
                } else if trim_where.is_some() {
                    self.word("FROM")?;
                }
                self.expr(expr)?;
                if let Some(chars) = trim_characters {
                    for c in chars {
                        self.comma();
                        self.expr(c)?;
                    }
                }
                self.close();
                Ok(())
            }
            Expr::Value(v) => self.value(&v.value),
            Expr::TypedString(ts) => {
                if ts.uses_odbc_syntax {
                    return Err(refuse("ODBC literals"));
                }
                self.data_type(&ts.data_type)?;
                match &ts.value.value {
                    Value::SingleQuotedString(s) => self.string(s),
                    Value::DoubleQuotedString(s)
                        if matches!(self.d, Dialect::BigQuery | Dialect::Databricks) =>
                    {
                        self.string(s)
                    }
                    _ => Err(refuse("a typed literal that is not a string")),
                }
            }
            Expr::Function(f) => self.function(f),
            Expr::Case {
                case_token: _,
                end_token: _,
                operand,
                conditions,
                else_result,
            } => {
                self.word("CASE")?;
                if let Some(x) = operand {
                    self.operand(x)?;
                }
                for w in conditions {
                    self.word("WHEN")?;
                    self.expr(&w.condition)?;
                    self.word("THEN")?;
                    self.expr(&w.result)?;
                }
                if let Some(x) = else_result {
                    self.word("ELSE")?;
                    self.expr(x)?;
                }
                self.word("END")
            }
            Expr::Exists { subquery, negated } => {
                self.not(*negated)?;
                self.word("EXISTS")?;
                self.open();
                self.query(subquery)?;
                self.close();
                Ok(())
            }
            Expr::Subquery(q) => {
                self.open();
                self.query(q)?;
                self.close();
                Ok(())
            }
            Expr::GroupingSets(sets) => {
                self.word("GROUPING SETS")?;
                self.open();
                self.list(sets, |p, set| {
                    p.open();
                    p.list(set, |p, e| p.expr(e))?;
                    p.close();
                    Ok(())
                })?;
                self.close();
                Ok(())
            }
            Expr::Cube(sets) | Expr::Rollup(sets) => {
                self.word(if matches!(e, Expr::Cube(_)) {
                    "CUBE"
                } else {
                    "ROLLUP"
                })?;
                self.open();
                self.list(sets, |p, set| match set.as_slice() {
                    [one] => p.expr(one),
                    more => {
                        p.open();
                        p.list(more, |p, e| p.expr(e))?;
                        p.close();
                        Ok(())
                    }
                })?;
                self.close();
                Ok(())
            }
            Expr::Tuple(items) => {
                self.open();
                self.list(items, |p, e| p.expr(e))?;
                self.close();
                Ok(())
            }
            Expr::Interval(i) => {
                // The quantity is a literal or a column (`INTERVAL '1 day'`, `INTERVAL 1 DAY`,
                // `INTERVAL n DAY`), never a nested expression.
                let simple = match i.value.as_ref() {
                    Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
                    Expr::UnaryOp {
                        op: UnaryOperator::Minus,
                        expr,
                    } => matches!(expr.as_ref(), Expr::Value(_)),
                    _ => false,
                };
                if !simple {
                    return Err(refuse("an INTERVAL whose quantity is an expression"));
                }
                self.word("INTERVAL")?;
                self.operand(&i.value)?;
                if let Some(f) = &i.leading_field {
                    self.datetime_field(f)?;
                    if let Some(p) = i.leading_precision {
                        self.glue = true;
                        self.open();
                        self.number(&p.to_string(), false)?;
                        self.close();
                    }
                }
                if let Some(f) = &i.last_field {
                    self.word("TO")?;
                    self.datetime_field(f)?;
                }
                if let Some(p) = i.fractional_seconds_precision {
                    self.glue = true;
                    self.open();
                    self.number(&p.to_string(), false)?;
                    self.close();
                }
                Ok(())
            }
            Expr::Array(a) => {
                if a.named {
                    self.word("ARRAY")?;
                    self.glue = true;
                }
                self.t("[");
                self.glue = true;
                self.list(&a.elem, |p, e| p.expr(e))?;
                self.out.push(']');
                self.glue = false;
                Ok(())
            }
            other => Err(refuse(format!(
                "the expression `{}`",
                crate::rewrite::excerpt(other)
            ))),
        }
    }

    fn postfix(&mut self, x: &Expr, kw: &str) -> R {
        self.operand(x)?;
        self.word(kw)
    }

    /// `ANY (…)` / `ALL (…)`: a sub-query as itself, anything else as an operand.
    fn paren_arg(&mut self, right: &Expr) -> R {
        self.open();
        match right {
            Expr::Subquery(q) => self.query(q)?,
            other => self.expr(other)?,
        }
        self.close();
        Ok(())
    }

    fn like(
        &mut self,
        kw: &str,
        negated: bool,
        any: bool,
        expr: &Expr,
        pattern: &Expr,
        escape: &Option<sqlparser::ast::ValueWithSpan>,
    ) -> R {
        self.operand(expr)?;
        self.not(negated)?;
        self.word(kw)?;
        if any {
            self.word("ANY")?;
        }
        self.operand(pattern)?;
        self.escape(escape)
    }

    fn function(&mut self, f: &Function) -> R {
        let Function {
            name,
            uses_odbc_syntax,
            parameters,
            args,
            filter,
            null_treatment,
            over,
            within_group,
        } = f;
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return Err(PolicyError::FunctionNotAllowed(name.to_string()));
        };
        let resolved = crate::functions::resolve(self.d, ident)
            .ok_or_else(|| PolicyError::FunctionNotAllowed(name.to_string()))?;
        if *uses_odbc_syntax || !matches!(parameters, FunctionArguments::None) {
            return Err(refuse("parametric and ODBC function calls"));
        }
        self.word(&resolved)?;
        match args {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(q) => {
                self.glue = true;
                self.open();
                self.query(q)?;
                self.close();
            }
            FunctionArguments::List(list) => {
                self.glue = true;
                self.open();
                match list.duplicate_treatment {
                    None => {}
                    Some(DuplicateTreatment::Distinct) => self.word("DISTINCT")?,
                    Some(DuplicateTreatment::All) => self.word("ALL")?,
                }
                self.list(&list.args, |p, a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => p.expr(e),
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {
                        p.t("*");
                        Ok(())
                    }
                    FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(n)) => {
                        p.object_name(n)?;
                        p.dot();
                        p.t("*");
                        Ok(())
                    }
                    FunctionArg::Unnamed(FunctionArgExpr::WildcardWithOptions(o)) => {
                        wildcard_plain(o)?;
                        p.t("*");
                        Ok(())
                    }
                    _ => Err(refuse("named function arguments")),
                })?;
                for clause in &list.clauses {
                    match clause {
                        FunctionArgumentClause::OrderBy(exprs) => {
                            self.word("ORDER BY")?;
                            self.list(exprs, |p, e| p.order_by_expr(e))?;
                        }
                        FunctionArgumentClause::Limit(e) => {
                            self.word("LIMIT")?;
                            self.operand(e)?;
                        }
                        FunctionArgumentClause::IgnoreOrRespectNulls(n) => {
                            self.null_treatment(n)?;
                        }
                        _ => return Err(refuse("this function argument clause")),
                    }
                }
                self.close();
            }
        }
        if !within_group.is_empty() {
            self.word("WITHIN GROUP")?;
            self.open();
            self.word("ORDER BY")?;
            self.list(within_group, |p, e| p.order_by_expr(e))?;
            self.close();
        }
        if let Some(x) = filter {
            self.word("FILTER")?;
            self.open();
            self.word("WHERE")?;
            self.expr(x)?;
            self.close();
        }
        if let Some(n) = null_treatment {
            self.null_treatment(n)?;
        }
        match over {
            None => {}
            Some(WindowType::NamedWindow(w)) => {
                self.word("OVER")?;
                self.ident(w)?;
            }
            Some(WindowType::WindowSpec(spec)) => {
                self.word("OVER")?;
                self.open();
                self.window_spec(spec)?;
                self.close();
            }
        }
        Ok(())
    }

    fn null_treatment(&mut self, n: &NullTreatment) -> R {
        self.word(match n {
            NullTreatment::IgnoreNulls => "IGNORE NULLS",
            NullTreatment::RespectNulls => "RESPECT NULLS",
        })
    }
}

/// Text sqlparser prints for a built-in type or date part: keywords, numbers, parentheses and
/// commas only (`NUMERIC(10,2)`, `TIMESTAMP(3) WITH TIME ZONE`, `WEEK(MONDAY)`).
fn keyword_text(s: &str) -> R {
    if s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
    {
        Ok(())
    } else {
        Err(refuse(format!("the type or date part {s:?}")))
    }
}

/// The wildcard modifiers the rewriter refuses are refused here too.
fn wildcard_plain(o: &WildcardAdditionalOptions) -> R {
    crate::rewrite::check_wildcard_options(o)
}

/// Expressions printed as one unit that needs no parentheses around it as an operand.
fn is_atom(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Nested(_)
        | Expr::Function(_)
        | Expr::Subquery(_)
        | Expr::Tuple(_)
        | Expr::Array(_)
        | Expr::Extract { .. }
        | Expr::Ceil { .. }
        | Expr::Floor { .. }
        | Expr::Position { .. }
        | Expr::Substring { .. }
        | Expr::Trim { .. }
        | Expr::Case { .. } => true,
        // Always printed as `CAST(… AS …)`; a literal is one token (a sign is a unary operator).
        Expr::Cast { .. } | Expr::Value(_) => true,
        _ => false,
    }
}

/// `123`, `1.5`, `.5`, `5.`, `1e10`, `1.5E-3`: digits only, one optional point, one optional
/// exponent. No sign, no underscores, no hexadecimal, no suffix.
pub(crate) fn is_plain_number(n: &str) -> bool {
    let b = n.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int = digits(&mut i);
    let mut frac = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac = digits(&mut i);
    }
    if int + frac == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Re-checks the printed text's lexical shape without sharing code with the printer: outside
/// quoted tokens there is no comment opener or closer (`--`, `/*`, `*/`, `//`, and `#` outside
/// PostgreSQL), no backslash, no `;`, no control character, no `$` but PostgreSQL's `$1`; every
/// quoted token is closed; inside strings there is no backslash or control character where
/// the warehouse would read one as an escape.
pub(crate) fn check_text(sql: &str, d: Dialect) -> Result<(), PolicyError> {
    let bad = |why: &str| Err(PolicyError::Verification(format!("printed SQL: {why}")));
    let pg = matches!(d, Dialect::Postgres | Dialect::DataFusion);
    let backtick = matches!(d, Dialect::BigQuery | Dialect::Databricks);
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'\'' | b'"' | b'`' => {
                // A quoted token: strings use ' (and " in backtick dialects), identifiers the
                // dialect's quote; the only escape is the doubled quote (PostgreSQL-like
                // dialects, and identifiers everywhere).
                let doubling =
                    pg || d == Dialect::Snowflake || c == b'`' || (c == b'"' && !backtick);
                if c == b'`' && !backtick {
                    return bad("a backtick");
                }
                let mut j = i + 1;
                loop {
                    match b.get(j).copied() {
                        None => return bad("an unterminated quoted token"),
                        Some(q) if q == c => {
                            if doubling && b.get(j + 1).copied() == Some(c) {
                                j += 2;
                                continue;
                            }
                            break;
                        }
                        Some(b'\\') if !pg => return bad("a backslash in a quoted token"),
                        Some(x) if x < 0x20 && !pg => {
                            return bad("a control character in a quoted token");
                        }
                        Some(0) => return bad("a NUL character"),
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
                // Two quoted tokens never touch, and a quote never follows a word character
                // (no `N'`, `E'`, `X'`, `r'` prefixes).
                if let Some(n) = b.get(i).copied()
                    && (n == b'\''
                        || n == b'"'
                        || n == b'`'
                        || n.is_ascii_alphanumeric()
                        || n == b'_')
                {
                    return bad("adjacent tokens without a separator");
                }
                continue;
            }
            b'-' if next == Some(b'-') => return bad("`--`"),
            b'/' if next == Some(b'*') || next == Some(b'/') => return bad("`/*` or `//`"),
            b'*' if next == Some(b'/') => return bad("`*/`"),
            b'#' if !pg => return bad("`#`"),
            b'\\' | b';' => return bad("a backslash or semicolon"),
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count();
                let after = b.get(i + 1 + digits).copied();
                if !pg
                    || digits == 0
                    || after.is_some_and(|a| a == b'$' || a.is_ascii_alphanumeric() || a == b'_')
                {
                    return bad("a `$` that is not a PostgreSQL parameter");
                }
            }
            x if x < 0x20 || x == 0x7f => return bad("a control character"),
            x if x >= 0x80 => return bad("a non-ASCII character outside quotes"),
            x if (x.is_ascii_alphanumeric() || x == b'_')
                && matches!(next, Some(b'\'') | Some(b'"') | Some(b'`')) =>
            {
                return bad("a literal prefix");
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The arguments of a table function, which must all be positional expressions.
fn positional(args: &[FunctionArg]) -> Result<Vec<&Expr>, PolicyError> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(refuse("named or wildcard arguments of a table function")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numbers_are_plain_decimal() {
        for ok in ["0", "123", "1.5", ".5", "5.", "1e10", "1.5E-3", "2e+2"] {
            assert!(is_plain_number(ok), "{ok}");
        }
        for bad in [
            "", ".", "1_000", "0x1F", "1e", "1.2.3", "1L", "-1", "1 ", "٣",
        ] {
            assert!(!is_plain_number(bad), "{bad}");
        }
    }

    #[test]
    fn the_text_check_refuses_comment_openers_and_prefixes() {
        let d = Dialect::Postgres;
        assert!(
            check_text(
                r#"SELECT "a" FROM "t" WHERE ("x" > - (- 1)) AND "s" = 'it''s'"#,
                d
            )
            .is_ok()
        );
        assert!(check_text("SELECT '--' AS \"a\", $1", d).is_ok());
        for bad in [
            "SELECT --1",
            "SELECT 1 >/* x */ 0",
            "SELECT N'x'",
            "SELECT 'a''",
            "SELECT 1; SELECT 2",
            "SELECT $$x$$",
            "SELECT 1 */ 2",
        ] {
            assert!(check_text(bad, d).is_err(), "{bad}");
        }
        assert!(check_text("SELECT 'a\\' AS `x`", Dialect::Databricks).is_err());
        assert!(check_text("SELECT 1 # c", Dialect::BigQuery).is_err());
        assert!(check_text("SELECT 1 // c", Dialect::Snowflake).is_err());
        assert!(check_text("SELECT \"it's\" AS `x`", Dialect::BigQuery).is_ok());
    }
}
