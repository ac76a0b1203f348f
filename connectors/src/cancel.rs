//! The cancel guard of the REST connectors: while a statement may still be running at the
//! warehouse, the connector holds one; dropping it (the client left, the row cap or the
//! deadline cut the answer) sends the warehouse's documented cancel request in the background.

/// Sends `POST <url>` with the user's bearer token when dropped, unless disarmed.
pub(crate) struct CancelOnDrop {
    http: reqwest::Client,
    url: Option<String>,
    token: String,
    /// Headers the warehouse also wants (Snowflake's token type).
    headers: &'static [(&'static str, &'static str)],
}

impl CancelOnDrop {
    /// A guard for the statement whose cancel URL is `url` (`None`: nothing to cancel).
    pub(crate) fn new(
        http: &reqwest::Client,
        url: Option<String>,
        token: &str,
        headers: &'static [(&'static str, &'static str)],
    ) -> Self {
        CancelOnDrop {
            http: http.clone(),
            url,
            token: token.to_string(),
            headers,
        }
    }

    /// The statement ended: nothing to cancel.
    pub(crate) fn disarm(&mut self) {
        self.url = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(url), Ok(rt)) = (self.url.take(), tokio::runtime::Handle::try_current()) {
            let mut req = self
                .http
                .post(url)
                .bearer_auth(std::mem::take(&mut self.token));
            for (k, v) in self.headers {
                req = req.header(*k, *v);
            }
            rt.spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}
