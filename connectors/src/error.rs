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
}

impl ConnectorError {
    /// A message safe to show to the client: never warehouse data.
    pub fn client_message(&self) -> String {
        match self {
            ConnectorError::Plan(m) => format!("the warehouse could not plan the query: {m}"),
            ConnectorError::Execution(_) => "the query failed while running in the warehouse \
                 (details are in the server log under this request id)"
                .to_string(),
            ConnectorError::Unavailable(_) | ConnectorError::Config(_) => {
                "the warehouse is unavailable".to_string()
            }
        }
    }

    /// A fixed-cardinality kind for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::Plan(_) => "plan",
            ConnectorError::Execution(_) => "execution",
            ConnectorError::Unavailable(_) => "unavailable",
            ConnectorError::Config(_) => "config",
        }
    }
}
