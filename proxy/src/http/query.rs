//! `POST /v1/query` and `POST /v1/policy/explain`: translation only. The request becomes an
//! engine call ([`crate::engine`]); its answer becomes a streaming body in the negotiated
//! format, its errors problem+json.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use serde::Deserialize;

use crate::app::AppState;
use crate::context::current_request_id;
use crate::engine::{Answer, Context, Mode, Outcome, Query, params};
use crate::error::Error;
use crate::http::auth::{authenticate, client_info, method_tried};
use crate::http::body::read_json_body_as;
use crate::http::conn::ClientConn;
use crate::http::encode::{self, Encoder, Format, TrailingError};

/// The request body of `/v1/query` and `/v1/policy/explain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    /// The SQL text.
    sql: String,
    /// Target connection id; optional when exactly one is declared.
    connection: Option<String>,
    /// Positional parameters (`$1`, `$2`...): JSON scalars.
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

const BODY_SHAPE: &str =
    "{\"sql\": string, \"connection\": string?, \"params\": [string | number | boolean | null]?}";

/// `POST /v1/query`.
pub async fn handle_query(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match query(&state, req, Mode::Run).await {
        Ok((Outcome::Rows(answer), format)) => match Streaming::start(*answer, format).await {
            Ok(s) => s.into_response(),
            Err(e) => e.into_response(),
        },
        Ok((Outcome::Explained(doc), _)) => axum::Json(doc).into_response(),
        Ok((Outcome::Described(_), _)) => Error::internal().into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/policy/explain`: the same body as `/v1/query`; the caller's own principal.
pub async fn handle_explain(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match query(&state, req, Mode::Explain).await {
        Ok((Outcome::Explained(doc), _)) => axum::Json(doc).into_response(),
        Ok((Outcome::Rows(_) | Outcome::Described(_), _)) => Error::internal().into_response(),
        Err(e) => e.into_response(),
    }
}

/// The request → an engine call. Every error is audited by the engine before it returns.
async fn query(state: &AppState, req: Request, mode: Mode) -> Result<(Outcome, Format), Error> {
    let (parts, body) = req.into_parts();
    let format = match mode {
        Mode::Run => Some(encode::negotiate(&parts.headers)),
        Mode::Explain | Mode::Describe => None,
    };
    let client = client_info(&parts);
    let ctx = Context {
        request_id: current_request_id(),
        client: client.clone(),
        cancel: parts
            .extensions
            .get::<ConnectInfo<ClientConn>>()
            .map(|c| c.0.gone.clone()),
        start_within: Duration::from_millis(state.config.server.request_timeout_ms),
    };
    let mut request = state.engine.begin(ctx);
    let format = match format.transpose() {
        Ok(f) => f,
        Err(e) => return Err(request.refuse(e).await),
    };
    let principal = match authenticate(state, &parts, &client).await {
        Ok(p) => p,
        Err(e) => {
            let tried = method_tried(&parts.headers, &state.config.auth.sessions.cookie_name);
            return Err(request.auth_failed(tried, e.into()).await);
        }
    };
    if let Err(e) = request.authenticated(principal) {
        return Err(request.refuse(e).await);
    }
    // A client trickling its body in (slowloris) is bounded by the start deadline too.
    let max_body = state.config.server.max_body_bytes;
    let read = read_json_body_as::<QueryBody>(&parts.headers, body, max_body, BODY_SHAPE);
    let body = match tokio::time::timeout_at(request.start_by().into(), read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(request.refuse(e).await),
        Err(_) => return Err(request.refuse(Error::timeout()).await),
    };
    let params = match params::from_json(&body.params) {
        Ok(p) => p,
        Err(e) => {
            let connection = body.connection.as_deref();
            return Err(request.refuse_query(&body.sql, connection, e).await);
        }
    };
    let outcome = request
        .run(Query {
            sql: body.sql,
            params,
            connection: body.connection,
            mode,
        })
        .await?;
    Ok((outcome, format.unwrap_or(Format::Json)))
}

/// Where a streaming answer is.
enum Phase {
    Streaming,
    Finishing(Option<Error>),
    Trailers,
    Done,
}

/// An answer as an HTTP body: the encoder's head, one frame per batch, the tail, and (Arrow,
/// CSV) trailers with the row count. The completion record is written when the body ends, or
/// by the answer's drop if the client leaves first.
struct Streaming {
    format: Format,
    encoder: Encoder,
    head: Option<Bytes>,
    answer: Answer,
    phase: Phase,
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

impl Streaming {
    async fn start(mut answer: Answer, format: Format) -> Result<Streaming, Error> {
        let request_id = current_request_id();
        match Encoder::start(format, answer.schema(), &request_id) {
            Ok((encoder, head)) => Ok(Streaming {
                format,
                encoder,
                head: Some(head),
                answer,
                phase: Phase::Streaming,
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the answer");
                let err = Error::internal();
                answer.finish(Some(&err)).await;
                Err(err)
            }
        }
    }

    fn into_response(self) -> Response {
        let (format, max_rows) = (self.format, self.answer.max_rows());
        let stream = futures::stream::unfold(self, |mut s| async move {
            let frame = s.step().await?;
            Some((frame, s))
        });
        let mut resp = Body::new(http_body_util::StreamBody::new(stream)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("sluice-row-limit", HeaderValue::from(max_rows));
        if format != Format::Json {
            h.insert(
                header::TRAILER,
                HeaderValue::from_static("sluice-row-count, sluice-truncated"),
            );
        }
        resp
    }

    /// Produces the next frame, or `None` at the end.
    async fn step(&mut self) -> Option<FrameResult> {
        if let Some(head) = self.head.take() {
            self.answer.sent(head.len() as u64);
            return Some(Ok(Frame::data(head)));
        }
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Streaming => {
                    self.phase = Phase::Streaming;
                    match self.answer.next().await {
                        Ok(Some(batch)) => {
                            if let Some(bytes) = self.encode(&batch) {
                                return Some(bytes);
                            }
                        }
                        Ok(None) => self.phase = Phase::Finishing(None),
                        Err(e) => self.phase = Phase::Finishing(Some(e)),
                    }
                }
                Phase::Finishing(error) => return Some(self.finish(error).await),
                Phase::Trailers => {
                    let mut t = HeaderMap::new();
                    t.insert("sluice-row-count", HeaderValue::from(self.answer.rows()));
                    t.insert(
                        "sluice-truncated",
                        HeaderValue::from_static(if self.answer.truncated() {
                            "true"
                        } else {
                            "false"
                        }),
                    );
                    return Some(Ok(Frame::trailers(t)));
                }
                Phase::Done => return None,
            }
        }
    }

    fn encode(&mut self, batch: &RecordBatch) -> Option<FrameResult> {
        match self.encoder.batch(batch) {
            Ok(bytes) => {
                self.answer.sent(bytes.len() as u64);
                if bytes.is_empty() {
                    None
                } else {
                    Some(Ok(Frame::data(bytes)))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding failed");
                self.phase = Phase::Finishing(Some(Error::new(
                    crate::error::Kind::Internal,
                    "internal",
                    "the answer could not be encoded",
                )));
                None
            }
        }
    }

    async fn finish(&mut self, error: Option<Error>) -> FrameResult {
        let trailing = error.as_ref().map(|e| TrailingError {
            code: e.code,
            message: &e.message,
        });
        let tail = self
            .encoder
            .finish(self.answer.rows(), self.answer.truncated(), trailing);
        let tail_len = tail.as_ref().map(|t| t.len() as u64).unwrap_or(0);
        self.answer.sent(tail_len);
        self.answer.finish(error.as_ref()).await;
        match (tail, &error, self.format) {
            // Arrow and CSV have no place for an error: abort the body so the client sees an
            // incomplete transfer rather than a short answer that looks complete.
            (_, Some(e), Format::Arrow | Format::Csv) => {
                self.phase = Phase::Done;
                Err(std::io::Error::other(format!(
                    "query failed mid-stream: {}",
                    e.code
                )))
            }
            (Ok(bytes), _, Format::Json) => {
                self.phase = Phase::Done;
                Ok(Frame::data(bytes))
            }
            (Ok(bytes), None, _) => {
                self.phase = Phase::Trailers;
                Ok(Frame::data(bytes))
            }
            (Err(e), _, _) => {
                self.phase = Phase::Done;
                Err(std::io::Error::other(e.to_string()))
            }
        }
    }
}
