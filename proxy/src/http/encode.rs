//! Result encoders: JSON, Arrow IPC stream and CSV, each producing bytes batch by batch so an
//! answer streams to the client as it arrives from the warehouse.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{EncoderOptions, make_encoder};
use axum::http::{HeaderMap, header};
use bytes::Bytes;

use crate::error::{Error, Kind};

/// Media type of the Arrow IPC stream format.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// An answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `application/vnd.apache.arrow.stream`.
    Arrow,
    /// `text/csv`.
    Csv,
}

impl Format {
    /// The response `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Arrow => ARROW_STREAM,
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Picks the answer format from `Accept` (highest q-value wins; no header means JSON).
pub fn negotiate(headers: &HeaderMap) -> Result<Format, Error> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(Format::Json);
    };
    let accept = accept
        .to_str()
        .map_err(|_| Error::request("invalid_header", "Accept is not valid text"))?;
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "application/json" | "application/*" | "*/*" => Format::Json,
            ARROW_STREAM => Format::Arrow,
            "text/csv" | "text/*" => Format::Csv,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f).ok_or_else(|| {
        Error::new(
            Kind::Request,
            "not_acceptable",
            format!(
                "cannot answer as {accept:?}: use application/json, {ARROW_STREAM} or text/csv"
            ),
        )
    })
}

/// An error reported at the end of a JSON answer that already started streaming.
pub struct TrailingError<'a> {
    /// Stable code.
    pub code: &'a str,
    /// Safe message.
    pub message: &'a str,
}

/// Encodes one answer.
pub enum Encoder {
    /// `{"columns":[..],"rows":[[..],..],"row_count":N,"truncated":b,"request_id":".."}`
    Json {
        /// Schema of every batch.
        schema: SchemaRef,
        /// Whether a row was written (for separators).
        wrote_row: bool,
        /// Echoed in the trailer object.
        request_id: String,
    },
    /// CSV with one header line.
    Csv,
    /// Arrow IPC stream.
    Arrow(Box<StreamWriter<Vec<u8>>>),
}

impl Encoder {
    /// Starts an answer; returns the encoder and the bytes that open it.
    pub fn start(
        format: Format,
        schema: &SchemaRef,
        request_id: &str,
    ) -> Result<(Self, Bytes), ArrowError> {
        match format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                let head = format!(
                    "{{\"columns\":{},\"rows\":[",
                    serde_json::Value::Array(columns)
                );
                let enc = Encoder::Json {
                    schema: Arc::clone(schema),
                    wrote_row: false,
                    request_id: request_id.to_string(),
                };
                Ok((enc, Bytes::from(head)))
            }
            Format::Csv => {
                let mut buf = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf)
                    .write(&RecordBatch::new_empty(Arc::clone(schema)))?;
                Ok((Encoder::Csv, Bytes::from(buf)))
            }
            Format::Arrow => {
                let mut w = StreamWriter::try_new(Vec::new(), schema)?;
                let head = std::mem::take(w.get_mut());
                Ok((Encoder::Arrow(Box::new(w)), Bytes::from(head)))
            }
        }
    }

    /// Encodes one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        match self {
            Encoder::Json {
                schema, wrote_row, ..
            } => {
                let options = EncoderOptions::default();
                let fields = schema.fields();
                let mut encoders = Vec::with_capacity(fields.len());
                for (field, column) in fields.iter().zip(batch.columns()) {
                    encoders.push(make_encoder(field, column.as_ref(), &options)?);
                }
                let mut out = Vec::with_capacity(batch.num_rows() * (8 + 12 * fields.len()));
                for row in 0..batch.num_rows() {
                    if *wrote_row {
                        out.push(b',');
                    }
                    *wrote_row = true;
                    out.push(b'[');
                    for (i, enc) in encoders.iter_mut().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        if enc.is_null(row) {
                            out.extend_from_slice(b"null");
                        } else {
                            enc.encode(row, &mut out);
                        }
                    }
                    out.push(b']');
                }
                Ok(Bytes::from(out))
            }
            Encoder::Csv => {
                let mut buf = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut buf)
                    .write(batch)?;
                Ok(Bytes::from(buf))
            }
            Encoder::Arrow(w) => {
                w.write(batch)?;
                Ok(Bytes::from(std::mem::take(w.get_mut())))
            }
        }
    }

    /// Closes the answer. A JSON answer carries the row count, the truncation flag and, when the
    /// query failed mid-stream, the error.
    pub fn finish(
        &mut self,
        rows: u64,
        truncated: bool,
        error: Option<TrailingError<'_>>,
    ) -> Result<Bytes, ArrowError> {
        match self {
            Encoder::Json { request_id, .. } => {
                let mut tail = format!(
                    "],\"row_count\":{rows},\"truncated\":{truncated},\"request_id\":{}",
                    serde_json::Value::String(request_id.clone())
                );
                if let Some(e) = error {
                    tail.push_str(&format!(
                        ",\"error\":{}",
                        serde_json::json!({"code": e.code, "message": e.message})
                    ));
                }
                tail.push('}');
                Ok(Bytes::from(tail))
            }
            Encoder::Csv => Ok(Bytes::new()),
            Encoder::Arrow(w) => {
                w.finish()?;
                Ok(Bytes::from(std::mem::take(w.get_mut())))
            }
        }
    }
}
