//! The request a task is working for: its id, set by the front door for the task that serves
//! the request, read by the audit records and logs written on its behalf.

tokio::task_local! {
    /// The current request's id.
    pub static REQUEST_ID: String;
}

/// The current request id, if called inside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}
