//! The rewrite: an explicit, allow-list walk over the AST. Every node kind is matched by name;
//! whatever is not handled here is refused. Each protected table reference becomes a derived
//! table selecting only declared columns and carrying the tenant predicate, under the alias the
//! rest of the query already uses.
//!
//! Structs are destructured exhaustively, so a field added by a sqlparser upgrade is a compile
//! error here rather than a silently ignored clause.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    BinaryOperator, CaseWhen, Cte, DataType, Distinct, ExcludeSelectItem, Expr, Fetch, Function,
    FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, GroupByExpr, Ident,
    Join, JoinConstraint, JoinOperator, LimitClause, NamedWindowDefinition, NamedWindowExpr,
    ObjectName, ObjectNamePart, Offset, OffsetRows, OrderBy, OrderByExpr, OrderByKind, Query,
    Select, SelectFlavor, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement,
    TableAlias, TableFactor, TableSample, TableSampleKind, TableSampleMethod, TableSampleModifier,
    TableSampleQuantity, TableWithJoins, UnaryOperator, Value, WildcardAdditionalOptions,
    WindowFrame, WindowFrameBound, WindowSpec, WindowType, With,
};

use crate::catalog::{Access, Catalog, ColumnView, Resolved, TableName, TableRule};
use crate::dialect::Dialect;
use crate::error::PolicyError;
use crate::params::CallerParams;
use crate::{functions, mask};

type R = Result<(), PolicyError>;

/// Longest excerpt of SQL quoted back in an error message.
const MAX_EXCERPT: usize = 80;
/// Most CTEs in one query (every nesting level together): scope bookkeeping is per CTE.
pub const MAX_CTES: usize = 256;
/// Most references to declared tables in one query: each becomes a wrapper listing the
/// table's columns, so the printed text grows with them.
pub const MAX_TABLE_REFERENCES: usize = 1_000;

fn unsupported(what: impl Into<String>) -> PolicyError {
    PolicyError::Unsupported(what.into())
}

pub(crate) fn excerpt(node: &impl std::fmt::Display) -> String {
    let s = node.to_string();
    if s.len() <= MAX_EXCERPT {
        return s;
    }
    let mut end = MAX_EXCERPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

pub(crate) struct Rewriter<'a> {
    catalog: &'a Catalog,
    groups: &'a [String],
    /// The caller's attributes, which row filters bind.
    attributes: &'a crate::Attributes,
    /// The attribute placeholders the row filters of the wrappers made so far use.
    pub(crate) attrs: crate::filter::AttrBinding,
    /// The row filters applied so far, one per table and filter.
    pub(crate) applied: Vec<crate::AppliedFilter>,
    tenant_expr: Expr,
    /// Every declared table read, under the (normalized) name the query refers to it by.
    pub(crate) uses: Vec<(String, &'a TableRule)>,
    /// Normalized names used as column references anywhere (last part of compound names).
    pub(crate) referenced: HashSet<String>,
    /// Normalized names the query itself defines as columns (select aliases, alias columns).
    pub(crate) aliases: HashSet<String>,
    /// Whether a `*` or `t.*` appears.
    pub(crate) wildcard: bool,
    /// Visible CTE names, innermost scope last (normalized as the warehouse compares them).
    scopes: Vec<Vec<String>>,
    pub(crate) tables: BTreeSet<TableName>,
    /// How many protected references were wrapped.
    pub(crate) wrapped: usize,
    /// CTEs and declared-table references seen so far (bounded: [`MAX_CTES`],
    /// [`MAX_TABLE_REFERENCES`]).
    ctes: usize,
    table_refs: usize,
    /// The caller's parameters, and which of them the query uses.
    params: CallerParams,
    pub(crate) params_used: BTreeSet<usize>,
    /// How often each caller parameter occurs in the caller's statement ([`Rewriter::new`]
    /// counts them): only one that occurs once is copied inside a fence (`copy_into_wrapper`).
    param_occurrences: Vec<u32>,
    /// The relations of each `SELECT` being walked, innermost last: how a column reference
    /// qualified by a table's full name (`"public"."orders"."id"`, as Metabase writes them)
    /// finds the wrapper that now stands for the table ([`Rewriter::qualified`]).
    levels: Vec<Level<'a>>,
    /// Set by a query for the plain SELECT that is its body: that SELECT's level stays for
    /// the query's ORDER BY ([`Rewriter::query_rest`] drops it).
    keep_level: bool,
    /// The level depths of the SELECTs that are the body of an `EXISTS` or `IN` sub-query
    /// ([`Rewriter::joinable_query`]).
    joinable: Vec<usize>,
}

/// The FROM items of one `SELECT` level seen so far.
#[derive(Default)]
struct Level<'a> {
    /// Every name a FROM item is visible by (normalized): aliases, bare table names, CTEs.
    names: Vec<String>,
    /// The declared tables read without an alias, and the alias their wrapper got.
    unaliased: Vec<(TableName, Ident)>,
    /// Each FROM item by its visible name (normalized), with the rule of the declared table
    /// it wraps when its columns keep their declared names; `None` for any other item (a CTE,
    /// a derived table, a function, a wrapper with an alias column list), whose columns are
    /// not known here. How a column reference finds the item that provides it
    /// ([`Rewriter::resolve`]).
    items: Vec<(String, Option<&'a TableRule>)>,
    /// A USING or NATURAL join at this level: an unqualified name may be a merged column.
    merged: bool,
}

/// Where a column reference resolves: how many levels out from the current one, the FROM
/// item's name there, its rule, and the column's declared name.
#[derive(Clone, Copy)]
struct ColumnAt<'a> {
    up: usize,
    item: &'a str,
    rule: &'a TableRule,
    column: &'a str,
}

impl<'a> Rewriter<'a> {
    pub(crate) fn new(
        catalog: &'a Catalog,
        caller: &crate::Caller<'a>,
        tenant_expr: Expr,
        params: CallerParams,
        statement: &Statement,
    ) -> Self {
        let param_occurrences = params.occurrences(statement);
        Rewriter {
            param_occurrences,
            catalog,
            groups: caller.groups,
            attributes: caller.attributes,
            attrs: crate::filter::AttrBinding::starting_at(params.count + 2),
            applied: Vec::new(),
            tenant_expr,
            uses: Vec::new(),
            referenced: HashSet::new(),
            aliases: HashSet::new(),
            wildcard: false,
            scopes: Vec::new(),
            tables: BTreeSet::new(),
            wrapped: 0,
            ctes: 0,
            table_refs: 0,
            params,
            params_used: BTreeSet::new(),
            levels: Vec::new(),
            keep_level: false,
            joinable: Vec::new(),
        }
    }

    /// Records a FROM item visible as `name` at the current level.
    fn define_relation(&mut self, name: &Ident, rule: Option<&'a TableRule>) {
        let n = self.dialect().normalize(name);
        if let Some(level) = self.levels.last_mut() {
            level.names.push(n.clone());
            level.items.push((n, rule));
        }
    }

    /// The declared table column that the reference `e` (`col` or `item.col`) reads, if that
    /// can be told from the FROM items in scope: the nearest level with an item of that name
    /// (qualified), or with exactly one item having such a column (unqualified; a level with
    /// an item of unknown columns or a merged USING column stops the search). `None` when it
    /// cannot be told, or the reference is ambiguous.
    fn resolve(&self, e: &Expr) -> Option<ColumnAt<'_>> {
        let d = self.dialect();
        let groups = self.groups;
        let column_of = |rule: &'a TableRule, want: &str| -> Option<&'a str> {
            rule.columns
                .iter()
                .find(|c| d.normalize_declared(c) == want)
                .filter(|c| rule.view(groups).iter().any(|v| v.name == c.as_str()))
                .map(String::as_str)
        };
        match e {
            Expr::Identifier(i) => {
                let want = d.normalize(i);
                for (up, level) in self.levels.iter().rev().enumerate() {
                    if level.merged {
                        return None;
                    }
                    let mut found = None;
                    for (name, rule) in &level.items {
                        let rule = (*rule)?;
                        if let Some(column) = column_of(rule, &want) {
                            if found.is_some() {
                                return None;
                            }
                            found = Some(ColumnAt {
                                up,
                                item: name.as_str(),
                                rule,
                                column,
                            });
                        }
                    }
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let (q, want) = (d.normalize(&parts[0]), d.normalize(&parts[1]));
                for (up, level) in self.levels.iter().rev().enumerate() {
                    if let Some((name, rule)) = level.items.iter().find(|(n, _)| *n == q) {
                        let rule = (*rule)?;
                        return column_of(rule, &want).map(|column| ColumnAt {
                            up,
                            item: name.as_str(),
                            rule,
                            column,
                        });
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Whether a FROM item named `name` (normalized) is defined fewer than `up` levels out.
    fn shadowed(&self, name: &str, up: usize) -> bool {
        self.levels
            .iter()
            .rev()
            .take(up)
            .any(|l| l.items.iter().any(|(n, _)| n == name))
    }

    /// The name a reference qualified by `prefix` (every part of a column reference but the
    /// column, or of a `q.*` but the star) must use once the tables are wrapped. A prefix of
    /// two or three parts that names a declared table read without an alias in this level or
    /// one outside it becomes that wrapper's alias (the table's own name); a prefix that
    /// names anything else is left alone. If a level nearer than the table's has a FROM item
    /// of the same name, the rewritten reference would read that item instead: refused, with
    /// the fix (an alias) in the message.
    fn qualified(&self, prefix: &[Ident]) -> Result<Option<Ident>, PolicyError> {
        if prefix.len() < 2 {
            return Ok(None);
        }
        let name = ObjectName::from(prefix.to_vec());
        let Ok(Resolved::Table(rule)) = self.catalog.resolve(&name) else {
            return Ok(None);
        };
        let d = self.dialect();
        let mut nearer: Vec<&str> = Vec::new();
        for level in self.levels.iter().rev() {
            if let Some((_, alias)) = level.unaliased.iter().find(|(t, _)| *t == rule.name) {
                let n = d.normalize(alias);
                if nearer.contains(&n.as_str()) {
                    return Err(unsupported(format!(
                        "the reference {} (another FROM item is named {}: give the table an alias)",
                        excerpt(&name),
                        excerpt(&alias.value)
                    )));
                }
                return Ok(Some(alias.clone()));
            }
            nearer.extend(level.names.iter().map(String::as_str));
        }
        Ok(None)
    }

    /// A qualified star's table name, requalified ([`Rewriter::requalify`]).
    fn requalify_name(&self, name: &mut ObjectName) -> R {
        let mut parts = Vec::with_capacity(name.0.len());
        for p in &name.0 {
            match p {
                ObjectNamePart::Identifier(i) => parts.push(i.clone()),
                ObjectNamePart::Function(_) => return Ok(()),
            }
        }
        let before = parts.len();
        self.requalify(&mut parts, false)?;
        if parts.len() != before {
            *name = ObjectName::from(parts);
        }
        Ok(())
    }

    /// `parts` (a column reference or a qualified star's name) with a full table name
    /// replaced by its wrapper's alias ([`Rewriter::qualified`]).
    fn requalify(&self, parts: &mut Vec<Ident>, column: bool) -> R {
        let keep = usize::from(column);
        if parts.len() < 2 + keep {
            return Ok(());
        }
        let split = parts.len() - keep;
        if let Some(alias) = self.qualified(&parts[..split])? {
            let rest = parts.split_off(split);
            *parts = std::iter::once(alias).chain(rest).collect();
        }
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        self.catalog.dialect()
    }

    fn define_alias(&mut self, ident: &Ident) {
        let n = self.dialect().normalize(ident);
        self.aliases.insert(n);
    }

    fn check_not_system_column(&self, ident: &Ident) -> R {
        if crate::dialect::is_system_column(self.dialect(), &self.dialect().normalize(ident)) {
            return Err(unsupported(format!(
                "the system column {}",
                excerpt(&ident.value)
            )));
        }
        Ok(())
    }

    fn reference(&mut self, ident: &Ident) {
        let n = self.dialect().normalize(ident);
        self.referenced.insert(n);
    }

    pub(crate) fn statement(&mut self, stmt: &mut Statement) -> R {
        match stmt {
            Statement::Query(q) => self.query(q),
            other => {
                let text = other.to_string();
                let kind = text
                    .split_whitespace()
                    .next()
                    .unwrap_or("this")
                    .to_uppercase();
                Err(PolicyError::StatementNotAllowed(kind))
            }
        }
    }

    fn is_visible_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return false;
        };
        let n = self.catalog.dialect().normalize(ident);
        self.scopes.iter().any(|s| s.contains(&n))
    }

    fn query(&mut self, q: &mut Query) -> R {
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
        if !locks.is_empty() {
            return Err(unsupported("FOR UPDATE / FOR SHARE"));
        }
        if for_clause.is_some() {
            return Err(unsupported("FOR XML / FOR JSON"));
        }
        if settings.is_some() || format_clause.is_some() {
            return Err(unsupported("SETTINGS / FORMAT clauses"));
        }
        if !pipe_operators.is_empty() {
            return Err(unsupported("pipe operators"));
        }
        let pushed = match with {
            Some(with) => {
                self.with(with)?;
                true
            }
            None => false,
        };
        let result = self.query_rest(body, order_by, limit_clause, fetch);
        if pushed {
            self.scopes.pop();
        }
        result
    }

    /// Rewrites the CTE bodies, each seeing only what the warehouse lets it see, then pushes the
    /// scope in which the main query sees all of them.
    fn with(&mut self, with: &mut With) -> R {
        let With {
            with_token: _,
            recursive,
            cte_tables,
        } = with;
        let d = self.catalog.dialect();
        self.ctes += cte_tables.len();
        if self.ctes > MAX_CTES {
            return Err(PolicyError::TooComplex(format!(
                "more than {MAX_CTES} common table expressions"
            )));
        }
        // Which names a recursive CTE's body sees differs between engines (DataFusion plans
        // CTEs in order and reads a table of the same name where PostgreSQL would see the
        // CTE): only PostgreSQL's rule is modelled, and proved again on its own parse tree.
        if *recursive && d != Dialect::Postgres {
            return Err(unsupported("WITH RECURSIVE outside PostgreSQL"));
        }
        let names: Vec<String> = cte_tables
            .iter()
            .map(|c| d.normalize(&c.alias.name))
            .collect();
        for (i, n) in names.iter().enumerate() {
            // DataFusion looks a CTE up by the dotted text of a table reference, so a CTE named
            // "public.orders" would stand in for the table inside the wrapper.
            if n.contains('.') {
                return Err(unsupported(format!(
                    "a CTE named {n} (a dot in a CTE name)"
                )));
            }
            if names[..i].contains(n) {
                return Err(unsupported(format!("two CTEs named {n}")));
            }
        }
        for (i, cte) in cte_tables.iter_mut().enumerate() {
            let Cte {
                alias,
                query,
                from,
                materialized: _,
                closing_paren_token: _,
            } = cte;
            for c in &alias.columns {
                self.define_alias(&c.name);
            }
            if from.is_some() {
                return Err(unsupported("CTE FROM clauses"));
            }
            // A non-recursive CTE body sees only the siblings before it, never itself.
            let visible = if *recursive {
                names.clone()
            } else {
                names[..i].to_vec()
            };
            self.scopes.push(visible);
            let result = self.query(query);
            self.scopes.pop();
            result?;
        }
        self.scopes.push(names);
        Ok(())
    }

    fn query_rest(
        &mut self,
        body: &mut SetExpr,
        order_by: &mut Option<OrderBy>,
        limit_clause: &mut Option<LimitClause>,
        fetch: &mut Option<Fetch>,
    ) -> R {
        // The ORDER BY of a plain SELECT sees that SELECT's FROM items: its level stays until
        // the query's clauses are walked. (That of a set operation sees only output names.)
        let depth = self.levels.len();
        self.keep_level = matches!(body, SetExpr::Select(_));
        let result = self.query_clauses(body, order_by, limit_clause, fetch);
        self.levels.truncate(depth);
        result
    }

    fn query_clauses(
        &mut self,
        body: &mut SetExpr,
        order_by: &mut Option<OrderBy>,
        limit_clause: &mut Option<LimitClause>,
        fetch: &mut Option<Fetch>,
    ) -> R {
        self.set_expr(body)?;
        if let Some(OrderBy { kind, interpolate }) = order_by {
            if interpolate.is_some() {
                return Err(unsupported("ORDER BY ... INTERPOLATE"));
            }
            match kind {
                OrderByKind::All(_) => {}
                OrderByKind::Expressions(exprs) => self.order_by_exprs(exprs)?,
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
                    return Err(unsupported("LIMIT BY"));
                }
                if let Some(l) = limit {
                    self.expr(l)?;
                }
                if let Some(Offset { value, rows: _ }) = offset {
                    self.expr(value)?;
                }
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                self.expr(offset)?;
                self.expr(limit)?;
            }
        }
        if let Some(Fetch {
            with_ties: _,
            percent: _,
            quantity,
        }) = fetch
            && let Some(q) = quantity
        {
            self.expr(q)?;
        }
        Ok(())
    }

    fn set_expr(&mut self, s: &mut SetExpr) -> R {
        match s {
            SetExpr::Select(select) => self.select(select),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation {
                left,
                op: _,
                set_quantifier: _,
                right,
            } => {
                self.set_expr(left)?;
                self.set_expr(right)
            }
            SetExpr::Values(values) => {
                for row in &mut values.rows {
                    for e in &mut row.content {
                        self.expr(e)?;
                    }
                }
                Ok(())
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                Err(PolicyError::StatementNotAllowed("data-modifying".into()))
            }
            SetExpr::Table(_) => Err(unsupported("the TABLE statement")),
        }
    }

    /// The sub-query of an `EXISTS` or `IN`, which PostgreSQL turns into a semi- or anti-join
    /// when it can: its SELECT gets no correlated copy ([`Rewriter::copy_into_wrapper`]). A
    /// correlation inside the fence would keep PostgreSQL from making it a join, and the
    /// sub-plan it runs instead for every outer row scans the tenant's rows unless an index
    /// serves the copied column (TPC-H q22: 118× slower); as a join it hashes once.
    fn joinable_query(&mut self, q: &mut Query) -> R {
        self.joinable.push(self.levels.len() + 1);
        let result = self.query(q);
        self.joinable.pop();
        result
    }

    fn select(&mut self, s: &mut Select) -> R {
        check_select_clauses(s)?;
        let keep = std::mem::take(&mut self.keep_level);
        self.levels.push(Level::default());
        let result = self.select_body(s);
        if !keep {
            self.levels.pop();
        }
        result
    }

    /// [`Rewriter::select`] inside its level.
    fn select_body(&mut self, s: &mut Select) -> R {
        let Select {
            distinct,
            projection,
            from,
            selection,
            group_by,
            having,
            named_window,
            qualify,
            ..
        } = s;
        for twj in from.iter_mut() {
            self.table_with_joins(twj)?;
        }
        match distinct {
            None | Some(Distinct::All) | Some(Distinct::Distinct) => {}
            Some(Distinct::On(exprs)) => self.exprs(exprs)?,
        }
        for item in projection.iter_mut() {
            self.select_item(item)?;
        }
        if let Some(e) = selection {
            self.expr(e)?;
        }
        if self.dialect() == Dialect::Postgres
            && let Some(e) = selection.as_ref()
        {
            let conjuncts = crate::pushdown::conjuncts(e);
            let mut moved = vec![false; conjuncts.len()];
            for twj in from.iter_mut() {
                let nullable = null_extended(&twj.joins);
                self.copy_into_wrapper(&mut twj.relation, &conjuncts, &mut moved, !nullable[0]);
                for (j, n) in twj.joins.iter_mut().zip(&nullable[1..]) {
                    self.copy_into_wrapper(&mut j.relation, &conjuncts, &mut moved, !n);
                }
            }
            if moved.iter().any(|m| *m) {
                let kept: Vec<Expr> = conjuncts
                    .iter()
                    .zip(&moved)
                    .filter(|(_, m)| !**m)
                    .map(|(c, _)| (*c).clone())
                    .collect();
                *selection = kept.into_iter().reduce(|l, r| Expr::BinaryOp {
                    left: Box::new(l),
                    op: BinaryOperator::And,
                    right: Box::new(r),
                });
            }
        }
        match group_by {
            GroupByExpr::All(modifiers) | GroupByExpr::Expressions(_, modifiers)
                if !modifiers.is_empty() =>
            {
                return Err(unsupported("GROUP BY modifiers"));
            }
            GroupByExpr::All(_) => {}
            GroupByExpr::Expressions(exprs, _) => self.exprs(exprs)?,
        }
        if let Some(e) = having {
            self.expr(e)?;
        }
        for NamedWindowDefinition(_, w) in named_window.iter_mut() {
            match w {
                NamedWindowExpr::NamedWindow(_) => {}
                NamedWindowExpr::WindowSpec(spec) => self.window_spec(spec)?,
            }
        }
        if let Some(e) = qualify {
            self.expr(e)?;
        }
        Ok(())
    }

    fn select_item(&mut self, item: &mut SelectItem) -> R {
        match item {
            SelectItem::UnnamedExpr(e) => self.expr(e),
            SelectItem::ExprWithAlias { expr, alias } => {
                self.define_alias(alias);
                self.expr(expr)
            }
            SelectItem::ExprWithAliases { expr, aliases } => {
                for a in aliases.iter() {
                    self.define_alias(a);
                }
                self.expr(expr)
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                self.wildcard = true;
                self.wildcard_modifiers(opts)?;
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(name) => self.requalify_name(name),
                    SelectItemQualifiedWildcardKind::Expr(e) => self.expr(e),
                }
            }
            SelectItem::Wildcard(opts) => {
                self.wildcard = true;
                self.wildcard_modifiers(opts)
            }
        }
    }

    /// The modifiers of a select-list `*` the dialect has ([`check_wildcard_modifiers`]):
    /// the columns `EXCLUDE` / `EXCEPT` name are references like any other (a column the
    /// caller may not see is refused naming it), a `REPLACE` expression is walked like any
    /// expression over the wrappers' columns and names an output column.
    fn wildcard_modifiers(&mut self, opts: &mut WildcardAdditionalOptions) -> R {
        check_wildcard_modifiers(self.dialect(), opts)?;
        if let Some(ex) = &opts.opt_exclude {
            let names: Vec<&ObjectName> = match ex {
                ExcludeSelectItem::Single(n) => vec![n],
                ExcludeSelectItem::Multiple(ns) => ns.iter().collect(),
            };
            for n in names {
                let [ObjectNamePart::Identifier(i)] = n.0.as_slice() else {
                    return Err(unsupported("a qualified name in EXCLUDE"));
                };
                self.check_not_system_column(i)?;
                self.reference(i);
            }
        }
        if let Some(ex) = &opts.opt_except {
            for i in std::iter::once(&ex.first_element).chain(&ex.additional_elements) {
                self.check_not_system_column(i)?;
                self.reference(i);
            }
        }
        if let Some(rep) = opts.opt_replace.as_mut() {
            for item in rep.items.iter_mut() {
                self.check_not_system_column(&item.column_name)?;
                self.reference(&item.column_name);
                self.expr(&mut item.expr)?;
            }
        }
        Ok(())
    }

    fn table_with_joins(&mut self, twj: &mut TableWithJoins) -> R {
        let TableWithJoins { relation, joins } = twj;
        self.table_factor(relation)?;
        for Join {
            relation,
            global,
            join_operator,
        } in joins.iter_mut()
        {
            if *global {
                return Err(unsupported("GLOBAL joins"));
            }
            self.table_factor(relation)?;
            let constraint = match join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c) => c,
                other => return Err(unsupported(format!("the join `{}`", excerpt(&Jo(other))))),
            };
            if matches!(
                constraint,
                JoinConstraint::Using(_) | JoinConstraint::Natural
            ) && let Some(level) = self.levels.last_mut()
            {
                level.merged = true;
            }
            match constraint {
                JoinConstraint::On(e) => self.expr(e)?,
                JoinConstraint::Using(names) => {
                    for n in names.iter() {
                        if let Some(ObjectNamePart::Identifier(i)) = n.0.last() {
                            self.reference(i);
                        }
                    }
                }
                JoinConstraint::Natural => self.wildcard = true,
                JoinConstraint::None => {}
            }
        }
        Ok(())
    }

    fn table_factor(&mut self, tf: &mut TableFactor) -> R {
        match tf {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                if let Some(a) = args
                    && with_hints.is_empty()
                    && version.is_none()
                    && partitions.is_empty()
                    && json_path.is_none()
                    && sample.is_none()
                    && index_hints.is_empty()
                    && a.settings.is_none()
                {
                    return self.table_function(name, &mut a.args, alias.as_ref());
                }
                if args.is_some() || *with_ordinality {
                    return Err(unsupported(format!("the table function {name}")));
                }
                if version.is_some() {
                    return Err(unsupported("time travel (AT / BEFORE / FOR SYSTEM_TIME)"));
                }
                if !partitions.is_empty() {
                    return Err(unsupported("partition selection"));
                }
                if !with_hints.is_empty() || !index_hints.is_empty() {
                    return Err(unsupported("table hints"));
                }
                if json_path.is_some() {
                    return Err(unsupported("JSON paths on tables"));
                }
                if let Some(s) = sample.as_ref() {
                    check_sample(self.dialect(), s)?;
                }
                if sample.is_some() && self.is_visible_cte(name) {
                    return Err(unsupported("TABLESAMPLE on a CTE"));
                }
                if self.is_visible_cte(name) {
                    let visible = match alias {
                        Some(a) => a.name.clone(),
                        None => last_ident(name),
                    };
                    self.define_relation(&visible, None);
                    return Ok(());
                }
                let Resolved::Table(rule) = self.catalog.resolve(name)?;
                self.table_refs += 1;
                if self.table_refs > MAX_TABLE_REFERENCES {
                    return Err(PolicyError::TooComplex(format!(
                        "more than {MAX_TABLE_REFERENCES} references to declared tables"
                    )));
                }
                if !rule.readable_by(self.groups) {
                    return Err(PolicyError::TableNotGranted(rule.name.to_string()));
                }
                self.tables.insert(rule.name.clone());
                // The rest of the query keeps referring to the same alias (or the bare name).
                let alias_slot = alias;
                let mut alias = match alias_slot.take() {
                    Some(a) => a,
                    None => {
                        let name = last_ident(name);
                        if let Some(level) = self.levels.last_mut() {
                            level.unaliased.push((rule.name.clone(), name.clone()));
                        }
                        TableAlias {
                            explicit: true,
                            name,
                            columns: vec![],
                            at: None,
                        }
                    }
                };
                let known = alias.columns.is_empty().then_some(rule);
                self.define_relation(&alias.name, known);
                alias.explicit = true;
                for c in &alias.columns {
                    self.define_alias(&c.name);
                }
                let alias_name = self.dialect().normalize(&alias.name);
                self.uses.push((alias_name, rule));
                let view = rule.view(self.groups);
                // Public tables are wrapped too: the wrapper names the declared columns, so a
                // column the warehouse has but the policy does not declare (or a whole-row
                // reference to it) is never read.
                let tenant_column = match &rule.access {
                    Access::Public => None,
                    Access::Protected { tenant_column } => {
                        self.wrapped += 1;
                        Some(tenant_column.as_str())
                    }
                };
                // A sampling clause samples the table inside the wrapper: a sample of the
                // caller's rows, never of the unfiltered table.
                let sample = sample.take();
                *tf = TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(self.wrapper(rule, tenant_column, &view, sample)?),
                    alias: Some(alias),
                    sample: None,
                };
                Ok(())
            }
            TableFactor::Derived {
                lateral: _,
                subquery,
                alias,
                sample,
            } => {
                if let Some(a) = alias {
                    for c in &a.columns {
                        self.define_alias(&c.name);
                    }
                    let name = a.name.clone();
                    self.define_relation(&name, None);
                }
                if sample.is_some() {
                    return Err(unsupported("TABLESAMPLE"));
                }
                self.query(subquery)
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: _,
            } => self.table_with_joins(table_with_joins),
            TableFactor::Function {
                lateral: _,
                name,
                args,
                with_ordinality: _,
                alias,
            } => self.table_function(name, args, alias.as_ref()),
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: _,
            } => {
                self.check_table_function("unnest")?;
                self.exprs(array_exprs)?;
                self.define_function_alias("unnest", alias.as_ref());
                Ok(())
            }
            other => Err(unsupported(format!(
                "the table expression `{}`",
                excerpt(other)
            ))),
        }
    }

    /// A set-returning function in FROM (`generate_series(...)`, `unnest(...)`, with or without
    /// LATERAL and WITH ORDINALITY): PostgreSQL only, a function of
    /// [`functions::TABLE_FUNCTIONS`], positional arguments walked like any expression (the
    /// columns they name belong to wrappers already filtered; a sub-query among them is
    /// rewritten). It reads no relation of its own.
    fn table_function(
        &mut self,
        name: &ObjectName,
        args: &mut [FunctionArg],
        alias: Option<&TableAlias>,
    ) -> R {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return Err(unsupported(format!("the table function {}", excerpt(name))));
        };
        let resolved = functions::resolve(self.dialect(), ident)
            .ok_or_else(|| unsupported(format!("the table function {}", excerpt(name))))?;
        self.check_table_function(&resolved)?;
        for a in args.iter_mut() {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => self.expr(e)?,
                _ => {
                    return Err(unsupported(format!(
                        "the arguments of the table function {resolved}"
                    )));
                }
            }
        }
        self.define_function_alias(&resolved, alias);
        Ok(())
    }

    fn check_table_function(&self, name: &str) -> R {
        if self.dialect() != Dialect::Postgres || !functions::TABLE_FUNCTIONS.contains(&name) {
            return Err(unsupported(format!("the table function {name}")));
        }
        Ok(())
    }

    /// A table function's alias (or, without one, its name) names a FROM item, and its
    /// column aliases name columns.
    fn define_function_alias(&mut self, function: &str, alias: Option<&TableAlias>) {
        match alias {
            Some(a) => {
                for c in &a.columns {
                    self.define_alias(&c.name);
                }
                let name = a.name.clone();
                self.define_alias(&name);
                self.define_relation(&name, None);
            }
            None => {
                let name = Ident::new(function);
                self.define_alias(&name);
                self.define_relation(&name, None);
            }
        }
    }

    /// Copies into this wrapper the conjuncts of the enclosing `WHERE` that may run inside its
    /// fence (see `pushdown`): a granted, unmasked column of it compared with a constant or a
    /// caller parameter, or — both columns' types declared and comparable without an error —
    /// with a granted, unmasked column of a wrapper at an outer query level (a correlated
    /// sub-query's `l_orderkey = l1.l_orderkey`), written `"<column>" <op> "<item>"."<column>"`.
    /// Anything else stays outside.
    fn copy_into_wrapper(
        &self,
        tf: &mut TableFactor,
        conjuncts: &[&Expr],
        moved: &mut [bool],
        movable: bool,
    ) {
        use crate::pushdown::{comparison, flipped};
        let params = self.params;
        // A caller parameter takes its type where PostgreSQL first analyzes it. Inside the
        // fence (analyzed with its FROM item) that is the compared column's type only if the
        // caller's statement has no other occurrence — one in a CTE, an earlier FROM item or
        // an outer select list (`CAST($1 AS float8)`) would be analyzed first, and the column
        // would then be cast to that type, a conversion that can fail on another tenant's row.
        // So a parameter is copied only when it occurs once.
        let once = |e: &Expr| match e {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => params
                    .index(p)
                    .and_then(|i| self.param_occurrences.get(i))
                    .is_some_and(|n| *n == 1),
                _ => true,
            },
            _ => true,
        };
        let constant = |e: &Expr| crate::pushdown::value(e, &params) && once(e);
        let d = self.dialect();
        let TableFactor::Derived {
            subquery,
            alias: Some(alias),
            ..
        } = tf
        else {
            return;
        };
        let Some(rule) = self.wrapped_rule(subquery) else {
            return;
        };
        if !alias.columns.is_empty()
            || subquery.limit_clause.is_none()
            || subquery.limit_clause != fence(self.catalog, rule, self.groups)
        {
            return;
        }
        let SetExpr::Select(inner) = subquery.body.as_mut() else {
            return;
        };
        if !matches!(rule.access, Access::Protected { .. }) || inner.selection.is_none() {
            return;
        }
        let alias_name = d.normalize(&alias.name);
        let unmasked = |r: &TableRule, column: &str| {
            r.view(self.groups)
                .iter()
                .any(|v| v.name == column && v.mask.is_none())
        };
        // A reference that reads an unmasked column of this wrapper: the column's name.
        let here = |e: &Expr| -> Option<&str> {
            let at = self.resolve(e)?;
            (at.up == 0 && at.item == alias_name && std::ptr::eq(at.rule, rule))
                .then_some(at.column)
                .filter(|c| unmasked(rule, c))
        };
        let column = |name: &str| Expr::Identifier(Ident::with_quote(d.quote(), name));
        let compare = |left: Expr, op: BinaryOperator, right: Expr| Expr::BinaryOp {
            left: Box::new(left),
            op,
            right: Box::new(right),
        };
        // `column <op> other`, `other` a column of a wrapper further out, both types
        // declared and leakproof-comparable: `"column" <op> "item"."other"`, the item's name
        // reaching that wrapper from inside this one (no nearer item, nor the table inside,
        // has it).
        let joinable = self.joinable.last() == Some(&self.levels.len());
        let correlated = |col: &str, op: BinaryOperator, other: &Expr| -> Option<Expr> {
            if joinable {
                return None;
            }
            let at = self.resolve(other)?;
            let mine = rule.unmasked_type(self.groups, col)?;
            let theirs = at.rule.unmasked_type(self.groups, at.column)?;
            let ok = at.up > 0
                && crate::leakproof::comparable(mine, theirs)
                && !self.shadowed(at.item, at.up)
                && at.item != rule.name.table;
            ok.then(|| {
                let outer = Expr::CompoundIdentifier(vec![
                    Ident::with_quote(d.quote(), at.item),
                    Ident::with_quote(d.quote(), at.column),
                ]);
                compare(column(col), op, outer)
            })
        };
        // A typed date or time literal of the column's declared type (see `pushdown`).
        let literal = |col: &str, e: &Expr| {
            rule.types
                .get(col)
                .is_some_and(|t| crate::pushdown::literal_type(e) == Some(*t))
        };
        for (i, c) in conjuncts.iter().enumerate() {
            let copied = match c {
                Expr::BinaryOp { left, op, right } if comparison(op) => {
                    if constant(right) {
                        here(left).map(|col| compare(column(col), op.clone(), (**right).clone()))
                    } else if constant(left) {
                        here(right).map(|col| compare(column(col), flipped(op), (**left).clone()))
                    } else if let Some(col) = here(left) {
                        if literal(col, right) {
                            Some(compare(column(col), op.clone(), (**right).clone()))
                        } else {
                            correlated(col, op.clone(), right)
                        }
                    } else if let Some(col) = here(right) {
                        if literal(col, left) {
                            Some(compare(column(col), flipped(op), (**left).clone()))
                        } else {
                            correlated(col, flipped(op), left)
                        }
                    } else {
                        None
                    }
                }
                Expr::InSubquery {
                    expr,
                    subquery,
                    negated: false,
                } => here(expr).and_then(|col| {
                    let (copy, theirs) = self.closed_subquery(subquery)?;
                    let mine = rule.unmasked_type(self.groups, col)?;
                    crate::leakproof::comparable(mine, theirs).then(|| Expr::InSubquery {
                        expr: Box::new(column(col)),
                        subquery: Box::new(copy),
                        negated: false,
                    })
                }),
                Expr::Between {
                    expr,
                    negated: false,
                    low,
                    high,
                } => here(expr)
                    .filter(|col| {
                        (constant(low) || literal(col, low))
                            && (constant(high) || literal(col, high))
                    })
                    .map(|col| Expr::Between {
                        expr: Box::new(column(col)),
                        negated: false,
                        low: low.clone(),
                        high: high.clone(),
                    }),
                _ => None,
            };
            if let Some(copied) = copied {
                // Moved, not copied, where the wrapper's rows are never null-extended (so the
                // outer WHERE would keep exactly the rows the filtered wrapper yields) and no
                // caller parameter is in it (a copied parameter occurs twice: the verifiers
                // count on it). A conjunct left outside too would count twice in PostgreSQL's
                // row estimates: squared selectivities, and nested loops over thousands of rows
                // estimated as one.
                if movable && !has_caller_param(c, &params) {
                    moved[i] = true;
                }
                inner.selection = inner.selection.take().map(|tenant| Expr::BinaryOp {
                    left: Box::new(tenant),
                    op: BinaryOperator::And,
                    right: Box::new(copied),
                });
            }
        }
    }

    /// The declared table a (rewritten) derived table is the wrapper of.
    fn wrapped_rule(&self, q: &Query) -> Option<&'a TableRule> {
        let SetExpr::Select(inner) = q.body.as_ref() else {
            return None;
        };
        match inner.from.as_slice() {
            [twj] if twj.joins.is_empty() => match &twj.relation {
                TableFactor::Table { name, .. } => self
                    .catalog
                    .tables()
                    .iter()
                    .find(|r| self.emitted_name(r) == *name),
                _ => None,
            },
            _ => None,
        }
    }

    /// A (rewritten) sub-query that may be copied inside a wrapper as `"<column>" IN (…)`:
    /// `SELECT <column> FROM <one wrapper> [WHERE …]` and nothing else, every column
    /// reference in it a column of that wrapper (so it reads nothing outside itself: it is
    /// evaluated once, on the caller's rows only, whatever row of the outer table is being
    /// filtered), no sub-query, no caller parameter. Returns the copy, every reference written
    /// `"<item>"."<column>"`, and the type of the column it selects (granted, unmasked,
    /// declared).
    fn closed_subquery(&self, q: &Query) -> Option<(Query, crate::leakproof::ColumnType)> {
        let d = self.dialect();
        let (select, wrapper, alias) = crate::pushdown::closed_shape(q)?;
        let rule = self.wrapped_rule(wrapper)?;
        let item = d.normalize(&alias.name);
        let view = rule.view(self.groups);
        // `col` or `item.col`, a column of the wrapper: its declared name.
        let column_of = |e: &Expr| -> Option<&str> {
            let want = match e {
                Expr::Identifier(i) => d.normalize(i),
                Expr::CompoundIdentifier(p) if p.len() == 2 && d.normalize(&p[0]) == item => {
                    d.normalize(&p[1])
                }
                _ => return None,
            };
            view.iter()
                .find(|v| d.normalize_declared(v.name) == want)
                .map(|v| v.name)
        };
        let qualified = |c: &str| {
            Expr::CompoundIdentifier(vec![
                Ident::with_quote(d.quote(), item.as_str()),
                Ident::with_quote(d.quote(), c),
            ])
        };
        let [SelectItem::UnnamedExpr(selected)] = select.projection.as_slice() else {
            return None;
        };
        let selected = column_of(selected)?;
        let ty = rule.unmasked_type(self.groups, selected)?;
        let mut selection = select.selection.clone();
        let mut closed = true;
        let _ = sqlparser::ast::visit_expressions_mut(&mut selection, |e: &mut Expr| {
            match e {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match column_of(e) {
                    Some(c) => *e = qualified(c),
                    None => closed = false,
                },
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    closed = false;
                }
                Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => closed = false,
                _ => {}
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        if !closed {
            return None;
        }
        let mut copy = q.clone();
        let SetExpr::Select(s) = copy.body.as_mut() else {
            return None;
        };
        s.projection = vec![SelectItem::UnnamedExpr(qualified(selected))];
        s.selection = selection;
        Some((copy, ty))
    }

    fn emitted_name(&self, rule: &TableRule) -> ObjectName {
        let q = self.catalog.dialect().quote();
        let mut parts = Vec::with_capacity(3);
        if let Some(c) = self.catalog.emitted_catalog(rule) {
            parts.push(Ident::with_quote(q, c));
        }
        parts.push(Ident::with_quote(q, rule.name.schema.as_str()));
        parts.push(Ident::with_quote(q, rule.name.table.as_str()));
        ObjectName::from(parts)
    }

    /// `SELECT <visible columns> FROM <table> WHERE <tenant column> = <tenant>`, built as an AST
    /// (no predicate for a public table). For a protected table on PostgreSQL it ends with
    /// `OFFSET 0`, the planner's optimization fence: no outer predicate is evaluated inside it,
    /// so a user predicate that raises an error never sees another tenant's row. A public
    /// table's wrapper has no fence: every row of it is visible to every caller, so the planner
    /// may inline it.
    fn wrapper(
        &mut self,
        rule: &TableRule,
        tenant_column: Option<&str>,
        view: &[ColumnView<'_>],
        sample: Option<TableSampleKind>,
    ) -> Result<Query, PolicyError> {
        let q = self.dialect().quote();
        if view.is_empty() {
            return Err(PolicyError::TableNotGranted(rule.name.to_string()));
        }
        let projection = mask::projection(self.dialect(), view)?;
        let relation = TableFactor::Table {
            name: self.emitted_name(rule),
            alias: None,
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: sample.map(|s| match s {
                TableSampleKind::BeforeTableAlias(s) | TableSampleKind::AfterTableAlias(s) => {
                    TableSampleKind::AfterTableAlias(s)
                }
            }),
            index_hints: vec![],
        };
        let mut selection = tenant_column.map(|c| Expr::BinaryOp {
            left: Box::new(Expr::Identifier(Ident::with_quote(q, c))),
            op: BinaryOperator::Eq,
            right: Box::new(self.tenant_expr.clone()),
        });
        // The row filters that apply to this caller, after the tenant's, in declared order.
        if tenant_column.is_some() {
            for f in rule.filters_for(self.groups) {
                let conjunct = self.filter_conjunct(rule, f)?;
                selection = selection.map(|tenant| Expr::BinaryOp {
                    left: Box::new(tenant),
                    op: BinaryOperator::And,
                    right: Box::new(conjunct),
                });
            }
        }
        let select = Select {
            select_token: AttachedToken::empty(),
            optimizer_hints: vec![],
            distinct: None,
            select_modifiers: None,
            top: None,
            top_before_distinct: false,
            projection,
            exclude: None,
            into: None,
            from: vec![TableWithJoins {
                relation,
                joins: vec![],
            }],
            lateral_views: vec![],
            prewhere: None,
            selection,
            connect_by: vec![],
            group_by: GroupByExpr::Expressions(vec![], vec![]),
            cluster_by: vec![],
            distribute_by: vec![],
            sort_by: vec![],
            having: None,
            named_window: vec![],
            qualify: None,
            window_before_qualify: false,
            value_table_mode: None,
            flavor: SelectFlavor::Standard,
        };
        Ok(Query {
            with: None,
            body: Box::new(SetExpr::Select(Box::new(select))),
            order_by: None,
            limit_clause: tenant_column.and_then(|_| fence(self.catalog, rule, self.groups)),
            fetch: None,
            locks: vec![],
            for_clause: None,
            settings: None,
            format_clause: None,
            pipe_operators: vec![],
        })
    }

    /// The conjunct row filter `f` of `rule` adds for this caller, its attribute bound (refused
    /// when the caller lacks it or carries another type); recorded as applied.
    fn filter_conjunct(
        &mut self,
        rule: &TableRule,
        f: &crate::RowFilter,
    ) -> Result<Expr, PolicyError> {
        let (d, style) = (self.dialect(), self.catalog.param_style());
        let slot = match f.attribute() {
            Some((name, ty)) => {
                let value = crate::filter::caller_value(self.attributes, &rule.name, name, ty)?;
                Some(self.attrs.slot(d, style, name, value).clone())
            }
            None => None,
        };
        let applied = crate::AppliedFilter {
            table: rule.name.clone(),
            filter: f.text.clone(),
            attribute: f.attribute().map(|(n, _)| n.to_string()),
            value: slot.as_ref().map(|s| s.value.clone()),
        };
        if !self.applied.contains(&applied) {
            self.applied.push(applied);
        }
        Ok(crate::filter::conjunct(d, style, f, slot.as_ref()))
    }

    fn exprs(&mut self, exprs: &mut [Expr]) -> R {
        exprs.iter_mut().try_for_each(|e| self.expr(e))
    }

    fn order_by_exprs(&mut self, exprs: &mut [OrderByExpr]) -> R {
        for OrderByExpr {
            expr,
            options: _,
            with_fill,
        } in exprs.iter_mut()
        {
            if with_fill.is_some() {
                return Err(unsupported("ORDER BY ... WITH FILL"));
            }
            self.expr(expr)?;
        }
        Ok(())
    }

    fn window_spec(&mut self, spec: &mut WindowSpec) -> R {
        let WindowSpec {
            window_name: _,
            partition_by,
            order_by,
            window_frame,
        } = spec;
        self.exprs(partition_by)?;
        self.order_by_exprs(order_by)?;
        if let Some(WindowFrame {
            units: _,
            start_bound,
            end_bound,
        }) = window_frame
        {
            self.frame_bound(start_bound)?;
            if let Some(b) = end_bound {
                self.frame_bound(b)?;
            }
        }
        Ok(())
    }

    fn frame_bound(&mut self, b: &mut WindowFrameBound) -> R {
        match b {
            WindowFrameBound::CurrentRow
            | WindowFrameBound::Preceding(None)
            | WindowFrameBound::Following(None) => Ok(()),
            WindowFrameBound::Preceding(Some(e)) | WindowFrameBound::Following(Some(e)) => {
                self.expr(e)
            }
        }
    }

    fn expr(&mut self, e: &mut Expr) -> R {
        match e {
            Expr::Identifier(i)
                if self.dialect() == Dialect::BigQuery
                    && i.quote_style.is_none()
                    && i.value.starts_with("@p") =>
            {
                // BigQuery's `@p1` parameters parse as identifiers.
                let n = self.params.check(&i.value)?;
                self.params_used.insert(n);
                Ok(())
            }
            Expr::Identifier(i) => {
                check_not_variable(i)?;
                self.check_not_system_column(i)?;
                self.reference(i);
                Ok(())
            }
            Expr::CompoundIdentifier(parts) => {
                for p in parts.iter() {
                    check_not_variable(p)?;
                }
                self.requalify(parts, true)?;
                if let Some(last) = parts.last() {
                    self.check_not_system_column(last)?;
                    self.reference(last);
                }
                Ok(())
            }
            Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x)
            | Expr::Nested(x) => self.expr(x),
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                self.expr(a)?;
                self.expr(b)
            }
            Expr::InList {
                expr,
                list,
                negated: _,
            } => {
                self.expr(expr)?;
                self.exprs(list)
            }
            Expr::InSubquery {
                expr,
                subquery,
                negated: _,
            } => {
                self.expr(expr)?;
                self.joinable_query(subquery)
            }
            Expr::Between {
                expr,
                negated: _,
                low,
                high,
            } => {
                self.expr(expr)?;
                self.expr(low)?;
                self.expr(high)
            }
            Expr::BinaryOp { left, op, right } => {
                check_binary_operator(op)?;
                self.expr(left)?;
                self.expr(right)
            }
            Expr::Like {
                negated: _,
                any: _,
                expr,
                pattern,
                escape_char: _,
            }
            | Expr::ILike {
                negated: _,
                any: _,
                expr,
                pattern,
                escape_char: _,
            }
            | Expr::SimilarTo {
                negated: _,
                expr,
                pattern,
                escape_char: _,
            } => {
                self.expr(expr)?;
                self.expr(pattern)
            }
            Expr::AnyOp {
                left,
                compare_op,
                right,
                is_some: _,
            }
            | Expr::AllOp {
                left,
                compare_op,
                right,
            } => {
                check_binary_operator(compare_op)?;
                self.expr(left)?;
                self.expr(right)
            }
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Plus | UnaryOperator::Minus | UnaryOperator::Not => self.expr(expr),
                other => Err(unsupported(format!("the unary operator {other}"))),
            },
            Expr::Cast {
                kind: _,
                expr,
                data_type,
                array,
                format,
            } => {
                if *array || format.is_some() {
                    return Err(unsupported("CAST ... FORMAT"));
                }
                check_data_type(data_type)?;
                self.expr(expr)
            }
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => {
                self.expr(timestamp)?;
                self.expr(time_zone)
            }
            Expr::Extract {
                field: _,
                syntax: _,
                expr,
            }
            | Expr::Ceil { expr, field: _ }
            | Expr::Floor { expr, field: _ } => self.expr(expr),
            Expr::Position { expr, r#in } => {
                self.expr(expr)?;
                self.expr(r#in)
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                special: _,
                shorthand: _,
            } => {
                self.expr(expr)?;
                if let Some(x) = substring_from {
                    self.expr(x)?;
                }
                if let Some(x) = substring_for {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Trim {
                trim_where: _,
                trim_what,
                expr,
                trim_characters,
            } => {
                self.expr(expr)?;
                if let Some(x) = trim_what {
                    self.expr(x)?;
                }
                if let Some(chars) = trim_characters {
                    self.exprs(chars)?;
                }
                Ok(())
            }
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => {
                    let n = self.params.check(p)?;
                    self.params_used.insert(n);
                    Ok(())
                }
                _ => Ok(()),
            },
            Expr::TypedString(ts) => check_data_type(&ts.data_type),
            Expr::Function(f) => self.function(f),
            Expr::Case {
                case_token: _,
                end_token: _,
                operand,
                conditions,
                else_result,
            } => {
                if let Some(x) = operand {
                    self.expr(x)?;
                }
                for CaseWhen { condition, result } in conditions.iter_mut() {
                    self.expr(condition)?;
                    self.expr(result)?;
                }
                if let Some(x) = else_result {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Exists {
                subquery,
                negated: _,
            } => self.joinable_query(subquery),
            Expr::Subquery(q) => self.query(q),
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                sets.iter_mut().try_for_each(|set| self.exprs(set))
            }
            Expr::Tuple(items) => self.exprs(items),
            Expr::Interval(i) => self.expr(&mut i.value),
            Expr::Array(a) => self.exprs(&mut a.elem),
            other => Err(unsupported(format!("the expression `{}`", excerpt(other)))),
        }
    }

    fn function(&mut self, f: &mut Function) -> R {
        let Function {
            name,
            uses_odbc_syntax,
            parameters,
            args,
            filter,
            null_treatment: _,
            over,
            within_group,
        } = f;
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return Err(PolicyError::FunctionNotAllowed(name.to_string()));
        };
        if *uses_odbc_syntax || functions::resolve(self.catalog.dialect(), ident).is_none() {
            return Err(PolicyError::FunctionNotAllowed(name.to_string()));
        }
        if !matches!(parameters, FunctionArguments::None) {
            return Err(unsupported("parametric functions"));
        }
        match args {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(q) => self.query(q)?,
            FunctionArguments::List(list) => {
                for arg in list.args.iter_mut() {
                    let arg_expr = match arg {
                        FunctionArg::Unnamed(a) => a,
                        FunctionArg::Named {
                            name: _,
                            arg: a,
                            operator: _,
                        } => a,
                        FunctionArg::ExprNamed {
                            name,
                            arg: a,
                            operator: _,
                        } => {
                            self.expr(name)?;
                            a
                        }
                    };
                    match arg_expr {
                        FunctionArgExpr::Expr(e) => self.expr(e)?,
                        FunctionArgExpr::Wildcard => {}
                        FunctionArgExpr::QualifiedWildcard(name) => {
                            self.wildcard = true;
                            self.requalify_name(name)?;
                        }
                        FunctionArgExpr::WildcardWithOptions(opts) => check_wildcard_options(opts)?,
                    }
                }
                for clause in list.clauses.iter_mut() {
                    match clause {
                        FunctionArgumentClause::OrderBy(exprs) => self.order_by_exprs(exprs)?,
                        FunctionArgumentClause::Limit(e) => self.expr(e)?,
                        FunctionArgumentClause::IgnoreOrRespectNulls(_)
                        | FunctionArgumentClause::Separator(_) => {}
                        other => {
                            return Err(unsupported(format!(
                                "the function clause `{}`",
                                excerpt(other)
                            )));
                        }
                    }
                }
            }
        }
        if let Some(x) = filter {
            self.expr(x)?;
        }
        match over {
            None | Some(WindowType::NamedWindow(_)) => {}
            Some(WindowType::WindowSpec(spec)) => self.window_spec(spec)?,
        }
        self.order_by_exprs(within_group)
    }
}

/// Refuses the clauses of a `SELECT` that neither the rewriter nor the printer models. The
/// struct is destructured exhaustively: a field added by a sqlparser upgrade is a compile error.
pub(crate) fn check_select_clauses(s: &Select) -> R {
    let Select {
        select_token: _,
        optimizer_hints,
        distinct: _,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection: _,
        exclude,
        into,
        from: _,
        lateral_views,
        prewhere,
        selection: _,
        connect_by,
        group_by: _,
        cluster_by,
        distribute_by,
        sort_by,
        having: _,
        named_window: _,
        qualify: _,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = s;
    if into.is_some() {
        return Err(unsupported("SELECT INTO"));
    }
    if !optimizer_hints.is_empty() || select_modifiers.is_some() {
        return Err(unsupported("optimizer hints and SELECT modifiers"));
    }
    if top.is_some() {
        return Err(unsupported("SELECT TOP"));
    }
    if exclude.is_some() {
        return Err(unsupported("SELECT ... EXCLUDE"));
    }
    if !lateral_views.is_empty() {
        return Err(unsupported("LATERAL VIEW"));
    }
    if prewhere.is_some() || !connect_by.is_empty() {
        return Err(unsupported("PREWHERE / CONNECT BY"));
    }
    if !cluster_by.is_empty() || !distribute_by.is_empty() || !sort_by.is_empty() {
        return Err(unsupported("CLUSTER BY / DISTRIBUTE BY / SORT BY"));
    }
    if value_table_mode.is_some() {
        return Err(unsupported("SELECT AS STRUCT / VALUE"));
    }
    if !matches!(flavor, SelectFlavor::Standard) {
        return Err(unsupported("FROM-first SELECT"));
    }
    Ok(())
}

/// Displays a join operator for error messages.
struct Jo<'a>(&'a JoinOperator);

impl std::fmt::Display for Jo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            JoinOperator::CrossApply => "CROSS APPLY",
            JoinOperator::OuterApply => "OUTER APPLY",
            JoinOperator::AsOf { .. } => "ASOF JOIN",
            JoinOperator::StraightJoin(_) => "STRAIGHT_JOIN",
            _ => "join",
        };
        f.write_str(name)
    }
}

/// The one sampling clause accepted, on a declared table (PostgreSQL): `TABLESAMPLE BERNOULLI
/// (<number>)`, which the rewriter moves inside the table's wrapper, so it samples the
/// caller's rows. Each row is kept or not at random, whatever its neighbours: `SYSTEM`
/// (whole pages) and `REPEATABLE (seed)` (a decision that is a function of the row's physical
/// position) would let the caller read how the table's pages — shared with other tenants —
/// are laid out, as `ctid` would, and are refused.
pub(crate) fn check_sample(d: Dialect, kind: &TableSampleKind) -> R {
    let (TableSampleKind::BeforeTableAlias(s) | TableSampleKind::AfterTableAlias(s)) = kind;
    if d == Dialect::Postgres && sample_is_bernoulli(s) {
        return Ok(());
    }
    Err(unsupported(
        "this sampling clause (only TABLESAMPLE BERNOULLI (<percent>) on PostgreSQL: SYSTEM \
         and REPEATABLE depend on how the table's pages are laid out)",
    ))
}

/// `TABLESAMPLE BERNOULLI (<number>)`, nothing more.
pub(crate) fn sample_is_bernoulli(s: &TableSample) -> bool {
    let TableSample {
        modifier,
        name,
        quantity,
        seed,
        bucket,
        offset,
    } = s;
    *modifier == TableSampleModifier::TableSample
        && *name == Some(TableSampleMethod::Bernoulli)
        && seed.is_none()
        && bucket.is_none()
        && offset.is_none()
        && matches!(quantity, Some(TableSampleQuantity { parenthesized: true, value, unit: None })
            if matches!(value, Expr::Value(v) if matches!(v.value, Value::Number(..))))
}

/// For a FROM item followed by `joins`, whether each of its parts (the first item, then each
/// joined one) may be null-extended by an outer join: the right side of a LEFT join, both sides
/// of a FULL one, everything before a RIGHT one; any join kind not listed counts as outer.
fn null_extended(joins: &[Join]) -> Vec<bool> {
    let mut out = vec![false; joins.len() + 1];
    for (i, j) in joins.iter().enumerate() {
        let (left, right) = match &j.join_operator {
            JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_) => {
                (false, false)
            }
            JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => (false, true),
            JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
            _ => (true, true),
        };
        if left {
            out[..=i].iter_mut().for_each(|n| *n = true);
        }
        out[i + 1] |= right;
    }
    out
}

/// Whether `e` holds one of the caller's parameters (the tenant's, in a wrapper inside a copied
/// sub-query, is not one).
fn has_caller_param(e: &Expr, params: &CallerParams) -> bool {
    sqlparser::ast::visit_expressions(e, |x: &Expr| match x {
        Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if params.index(p).is_some()) => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// `OFFSET 0` for PostgreSQL (see [`Rewriter::wrapper`]) unless the catalog relies on the
/// warehouse's row security; nothing elsewhere.
/// The `OFFSET 0` that ends a PostgreSQL wrapper of `rule` for a caller with `groups`: on
/// every protected table unless the catalog relies on the warehouse's row security, and then
/// still on a table a row filter applies to (row security knows the tenant, not the caller's
/// attributes: without the fence a leaky predicate could see the tenant's other rows).
pub(crate) fn fence(catalog: &Catalog, rule: &TableRule, groups: &[String]) -> Option<LimitClause> {
    let fenced = catalog.fenced() || rule.filters_for(groups).next().is_some();
    (catalog.dialect() == Dialect::Postgres && fenced).then(|| LimitClause::LimitOffset {
        limit: None,
        offset: Some(Offset {
            value: Expr::value(number("0")),
            rows: OffsetRows::None,
        }),
        limit_by: vec![],
    })
}

pub(crate) fn number(n: &str) -> Value {
    Value::Number(n.to_string(), false)
}

fn last_ident(name: &ObjectName) -> Ident {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.clone(),
        _ => Ident::new("t"),
    }
}

/// `@param` and `@@system_variable` parse as identifiers in some dialects (BigQuery); they are
/// not columns, so they are refused like bind parameters.
fn check_not_variable(i: &Ident) -> R {
    if i.quote_style.is_none() && i.value.starts_with('@') {
        return Err(unsupported("query parameters and system variables (@name)"));
    }
    Ok(())
}

/// The `*` modifiers accepted, per dialect, as each warehouse documents them: Snowflake's
/// `EXCLUDE` and `REPLACE`, BigQuery's `EXCEPT` and `REPLACE`, Databricks' `EXCEPT`. Never
/// `ILIKE`, `RENAME` or an `AS` on the star.
pub(crate) fn check_wildcard_modifiers(d: Dialect, opts: &WildcardAdditionalOptions) -> R {
    let allowed = match d {
        Dialect::Snowflake => Modifiers {
            exclude: true,
            except: false,
            replace: true,
        },
        Dialect::BigQuery => Modifiers {
            exclude: false,
            except: true,
            replace: true,
        },
        Dialect::Databricks => Modifiers {
            exclude: false,
            except: true,
            replace: false,
        },
        Dialect::Postgres | Dialect::DataFusion => Modifiers::NONE,
    };
    check_modifiers(opts, allowed).map_err(|()| {
        unsupported(
            "wildcard modifiers this warehouse does not have (EXCLUDE and REPLACE in Snowflake, \
             EXCEPT and REPLACE in BigQuery, EXCEPT in Databricks)",
        )
    })
}

/// A star without modifiers (inside a function call's arguments).
pub(crate) fn check_wildcard_options(opts: &WildcardAdditionalOptions) -> R {
    check_modifiers(opts, Modifiers::NONE)
        .map_err(|()| unsupported("wildcard modifiers (EXCEPT / EXCLUDE / REPLACE / RENAME)"))
}

/// Which star modifiers may be present.
#[derive(Clone, Copy)]
struct Modifiers {
    exclude: bool,
    except: bool,
    replace: bool,
}

impl Modifiers {
    const NONE: Modifiers = Modifiers {
        exclude: false,
        except: false,
        replace: false,
    };
}

fn check_modifiers(opts: &WildcardAdditionalOptions, allowed: Modifiers) -> Result<(), ()> {
    let WildcardAdditionalOptions {
        wildcard_token: _,
        opt_ilike,
        opt_exclude,
        opt_except,
        opt_replace,
        opt_rename,
        opt_alias,
    } = opts;
    if opt_ilike.is_some()
        || opt_rename.is_some()
        || opt_alias.is_some()
        || (opt_exclude.is_some() && !allowed.exclude)
        || (opt_except.is_some() && !allowed.except)
        || (opt_replace.is_some() && !allowed.replace)
    {
        return Err(());
    }
    Ok(())
}

pub(crate) fn check_binary_operator(op: &BinaryOperator) -> R {
    use BinaryOperator as B;
    match op {
        B::Plus
        | B::Minus
        | B::Multiply
        | B::Divide
        | B::Modulo
        | B::StringConcat
        | B::Gt
        | B::Lt
        | B::GtEq
        | B::LtEq
        | B::Eq
        | B::NotEq
        | B::Spaceship
        | B::And
        | B::Or
        | B::Xor
        | B::BitwiseOr
        | B::BitwiseAnd
        | B::BitwiseXor
        | B::PGBitwiseXor
        | B::PGBitwiseShiftLeft
        | B::PGBitwiseShiftRight
        | B::PGExp
        | B::PGRegexMatch
        | B::PGRegexIMatch
        | B::PGRegexNotMatch
        | B::PGRegexNotIMatch
        | B::PGLikeMatch
        | B::PGILikeMatch
        | B::PGNotLikeMatch
        | B::PGNotILikeMatch
        | B::PGStartsWith
        | B::Arrow
        | B::LongArrow
        | B::HashArrow
        | B::HashLongArrow
        | B::AtArrow
        | B::ArrowAt
        | B::Question
        | B::QuestionAnd
        | B::QuestionPipe
        | B::Overlaps => Ok(()),
        other => Err(unsupported(format!("the operator {other}"))),
    }
}

pub(crate) fn check_data_type(t: &DataType) -> R {
    use DataType as T;
    match t {
        T::Character(_)
        | T::Char(_)
        | T::CharacterVarying(_)
        | T::CharVarying(_)
        | T::Varchar(_)
        | T::Nvarchar(_)
        | T::Text
        | T::String(_)
        | T::Uuid
        | T::Bytea
        | T::Binary(_)
        | T::Varbinary(_)
        | T::Bytes(_)
        | T::Numeric(_)
        | T::Decimal(_)
        | T::BigNumeric(_)
        | T::BigDecimal(_)
        | T::Dec(_)
        | T::Float(_)
        | T::TinyInt(_)
        | T::SmallInt(_)
        | T::Int(_)
        | T::Integer(_)
        | T::BigInt(_)
        | T::Int2(_)
        | T::Int4(_)
        | T::Int8(_)
        | T::Int16
        | T::Int32
        | T::Int64
        | T::Float4
        | T::Float8
        | T::Float32
        | T::Float64
        | T::Real
        | T::Double(_)
        | T::DoublePrecision
        | T::Bool
        | T::Boolean
        | T::Date
        | T::Time(_, _)
        | T::Datetime(_)
        | T::Timestamp(_, _)
        | T::TimestampNtz(_)
        | T::Interval { .. }
        | T::JSON
        | T::JSONB => Ok(()),
        other => Err(unsupported(format!("the type {other}"))),
    }
}
