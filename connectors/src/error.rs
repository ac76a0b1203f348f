//! Connector errors. Warehouse error text is kept for the logs only: it may quote data (a failed
//! cast names the value), so clients see [`ConnectorError::client_message`].

/// Why a query failed in or on the way to the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The warehouse refused to plan the query (unknown column, type mismatch...). Planning reads
    /// no data, so the message only names what the query itself says.
    #[error("the warehouse could not plan the query: {0}")]
    Plan(String),
    /// The query failed while running. The detail is for logs only.
    #[error("the query failed in the warehouse: {0}")]
    Execution(String),
    /// The warehouse could not be reached or is not configured correctly.
    #[error("the warehouse is unavailable: {0}")]
    Unavailable(String),
    /// The connector was configured wrongly.
    #[error("invalid connector configuration: {0}")]
    Config(String),
    /// The warehouse refused or failed the query with its own error code (SQLSTATE, ...). The
    /// message may quote data: clients get the code only, the audit log the whole text.
    #[error("the warehouse failed the query with code {code}: {message}")]
    Warehouse {
        /// The warehouse's code.
        code: String,
        /// The warehouse's message.
        message: String,
    },
    /// The warehouse refused the credential (HTTP 401): the caller's token may need a refresh.
    #[error("the warehouse refused the credential: {0}")]
    Unauthorized(String),
    /// A bind parameter's value does not fit the type the warehouse expects there. The text is
    /// the connector's (it names the parameter and the types, never the value).
    #[error("{0}")]
    Parameter(String),
    /// A limit of sluice's own was reached (a federated workspace's memory, a source's row
    /// cap). The text is sluice's, never the warehouse's: it is shown to the caller.
    #[error("{0}")]
    ResourceExhausted(String),
}

/// What the caller sees of a planning error. A warehouse's own text (PostgreSQL's, prefixed by
/// its SQLSTATE) can quote the query's literals and names the warehouse's objects: it stays in
/// the audit record, and the caller gets sluice's wording of the error class. Texts sluice or
/// its embedded engine wrote are shown as they are.
fn plan_message(m: &str) -> String {
    let code = m.split_once(": ").map(|(c, _)| c).filter(|c| {
        c.len() == 5
            && c.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    let Some(code) = code else {
        return format!("the warehouse could not plan the query: {m}");
    };
    let what = match code {
        "42703" => "a column the query names does not exist",
        "42P01" => "a relation the query names does not exist",
        "42883" => "a function or operator the query names does not exist for these argument types",
        "42702" | "42725" => "a name in the query is ambiguous",
        "42803" => "a column must appear in GROUP BY or be used in an aggregate",
        "42804" | "42846" | "42P18" => "the types in the query do not match",
        "42601" => "the warehouse could not read the query's syntax",
        "42501" => "the warehouse refused access to a relation the query reads",
        "22P02" | "22007" | "22008" | "22003" => {
            "a constant in the query is not valid for its type"
        }
        _ => "the warehouse could not plan the query",
    };
    format!(
        "{what} (SQLSTATE {code}; the warehouse's message is in the audit log under this request id)"
    )
}

impl ConnectorError {
    /// A message safe to show to the client: never warehouse data.
    pub fn client_message(&self) -> String {
        match self {
            ConnectorError::Plan(m) => plan_message(m),
            ConnectorError::Execution(_) => "the query failed while running in the warehouse \
                 (details are in the server log under this request id)"
                .to_string(),
            ConnectorError::Unavailable(_) | ConnectorError::Config(_) => {
                "the warehouse is unavailable".to_string()
            }
            ConnectorError::Unauthorized(_) => "the warehouse refused the credential".to_string(),
            ConnectorError::ResourceExhausted(m) | ConnectorError::Parameter(m) => m.clone(),
            // Warehouse messages can quote any value, also another tenant's: the caller gets
            // the warehouse's code, the audit log the whole text.
            ConnectorError::Warehouse { code, .. } => format!(
                "the query failed in the warehouse with code {code} (the warehouse's message is \
                 in the audit log under this request id)"
            ),
        }
    }

    /// The message for the server log: quoted text and numbers replaced by `?`, since warehouse
    /// messages can quote data (`invalid input syntax for type integer: "LEAK..."`).
    pub fn log_message(&self) -> String {
        redact(&self.to_string())
    }

    /// The warehouse's own error code, when it gave one.
    pub fn warehouse_code(&self) -> Option<&str> {
        match self {
            ConnectorError::Warehouse { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Warehouse text with quoted values and numbers replaced by `?`: messages can quote data
/// (`invalid input syntax for type integer: "LEAK..."`).
fn redact(raw: &str) -> String {
    {
        let mut out = String::with_capacity(raw.len());
        let mut quote: Option<char> = None;
        let mut prev_digit = false;
        for c in raw.chars() {
            match quote {
                Some(q) if c == q => {
                    out.push(c);
                    quote = None;
                }
                Some(_) => {}
                None if c == '\'' || c == '"' => {
                    out.push(c);
                    out.push('?');
                    quote = Some(c);
                }
                None if c.is_ascii_digit() => {
                    if !prev_digit {
                        out.push('?');
                    }
                    prev_digit = true;
                    continue;
                }
                None => out.push(c),
            }
            prev_digit = false;
        }
        out
    }
}

impl ConnectorError {
    /// A fixed-cardinality kind for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::Plan(_) => "plan",
            ConnectorError::Execution(_) => "execution",
            ConnectorError::Unavailable(_) => "unavailable",
            ConnectorError::Config(_) => "config",
            ConnectorError::Unauthorized(_) => "unauthorized",
            ConnectorError::Warehouse { .. } => "warehouse",
            ConnectorError::ResourceExhausted(_) => "resource_exhausted",
            ConnectorError::Parameter(_) => "parameter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectorError;

    #[test]
    fn log_messages_do_not_carry_quoted_values_or_numbers() {
        let e = ConnectorError::Execution(
            "22P02: invalid input syntax for type integer: \"LEAK-B-note-7\" at 'x' value 900007"
                .into(),
        );
        let m = e.log_message();
        assert!(
            !m.contains("LEAK") && !m.contains("900007") && !m.contains("'x'"),
            "{m}"
        );
        assert!(m.contains("invalid input syntax for type integer"), "{m}");
    }
}
