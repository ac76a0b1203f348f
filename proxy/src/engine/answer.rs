//! A query's answer, protocol-free: its Arrow schema and a stream of record batches that honours
//! the row cap and the deadline, carrying the completion record. The front door encodes the
//! batches; the completion record is written when the front door calls [`Answer::finish`], or,
//! if the answer is dropped first (the client left), on drop with outcome `cancelled`.

use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_connectors::{ConnectorError, QueryStream};
use tokio::time::timeout_at;

use crate::engine::audit::Completion;
use crate::engine::connection::warehouse_error;
use crate::error::Error;

/// A streaming answer.
pub struct Answer {
    schema: SchemaRef,
    batches: Option<BoxStream<'static, Result<RecordBatch, ConnectorError>>>,
    pending: Option<RecordBatch>,
    max_rows: u64,
    truncated: bool,
    deadline: Instant,
    completion: Completion,
}

impl Answer {
    pub(crate) fn new(
        stream: QueryStream,
        first: Option<RecordBatch>,
        completion: Completion,
        max_rows: u64,
        deadline: Instant,
    ) -> Answer {
        Answer {
            schema: stream.schema,
            // No first batch means the answer is empty and the stream has ended: never poll it
            // again.
            batches: first.is_some().then_some(stream.batches),
            pending: first,
            max_rows,
            truncated: false,
            deadline,
            completion,
        }
    }

    /// The answer's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The most rows this answer returns.
    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }

    /// Rows returned so far.
    pub fn rows(&self) -> u64 {
        self.completion.rows
    }

    /// Whether rows were left out at the row cap.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Counts bytes the front door sent for this answer (recorded in the completion record).
    pub fn sent(&mut self, bytes: u64) {
        self.completion.bytes += bytes;
    }

    /// The next non-empty batch (`None` at the end), honouring the deadline and the row cap.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, Error> {
        loop {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => {
                    let Some(batches) = self.batches.as_mut() else {
                        return Ok(None);
                    };
                    // `timeout_at` polls its future first, so a source that always has a batch
                    // ready would never time out: check the deadline explicitly.
                    if Instant::now() >= self.deadline {
                        self.batches = None;
                        return Err(Error::timeout());
                    }
                    match timeout_at(self.deadline.into(), batches.next()).await {
                        Err(_) => {
                            self.batches = None;
                            return Err(Error::timeout());
                        }
                        Ok(None) => return Ok(None),
                        Ok(Some(Err(e))) => {
                            self.batches = None;
                            return Err(warehouse_error(&e));
                        }
                        Ok(Some(Ok(b))) => b,
                    }
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let remaining = self.max_rows.saturating_sub(self.completion.rows);
            if remaining == 0 {
                // More rows exist beyond the cap: stop the warehouse query by dropping it.
                self.truncated = true;
                self.batches = None;
                return Ok(None);
            }
            let batch = if batch.num_rows() as u64 > remaining {
                self.truncated = true;
                self.batches = None;
                batch.slice(0, remaining as usize)
            } else {
                batch
            };
            self.completion.rows += batch.num_rows() as u64;
            return Ok(Some(batch));
        }
    }

    /// Ends the answer and writes its completion record: `ok`, `truncated`, or, with an error,
    /// `timeout` or `error`. The warehouse query (if still running) is dropped first.
    pub async fn finish(&mut self, error: Option<&Error>) {
        self.batches = None;
        self.pending = None;
        let outcome = match (error, self.truncated) {
            (Some(e), _) if e.code == "timeout" => "timeout",
            // The caller cancelled (a wire CancelRequest) or left mid-answer.
            (Some(e), _) if e.kind == crate::error::Kind::ClientGone => "cancelled",
            (Some(_), _) => "error",
            (None, true) => "truncated",
            (None, false) => "ok",
        };
        self.completion
            .finish(outcome, error.map(|e| (e.code, e.message.as_str())))
            .await;
    }
}
