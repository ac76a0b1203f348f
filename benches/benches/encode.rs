//! Encoding an answer of 100,000 rows (an id, a tenant, an amount, a timestamp, a status), in
//! the 4,096-row batches the connectors produce, as JSON, Arrow IPC and CSV: the encoder's share
//! of streaming throughput. Guards the performance issue's streaming budgets (Arrow at least
//! 10M rows/s, JSON at least 2M rows/s end to end).
#![allow(clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::http::encode::{Encoder, Format};

const ROWS: usize = 100_000;
const BATCH: usize = 4_096;

fn batches() -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("status", DataType::Utf8, true),
    ]));
    (0..ROWS)
        .step_by(BATCH)
        .map(|start| {
            let n = BATCH.min(ROWS - start);
            let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from(vec!["acme"; n])),
                    Arc::new(Float64Array::from(
                        ids.iter().map(|i| *i as f64 * 1.25).collect::<Vec<_>>(),
                    )),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            ids.iter()
                                .map(|i| 1_700_000_000_000_000 + i * 1_000_000)
                                .collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from(
                        ids.iter()
                            .map(|i| if i % 3 == 0 { "shipped" } else { "open" })
                            .collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("bench data")
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let data = batches();
    let schema = data[0].schema();
    let mut g = c.benchmark_group("encode_100k_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, format) in [
        ("json", Format::Json),
        ("arrow", Format::Arrow),
        ("csv", Format::Csv),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (mut enc, head) = Encoder::start(format, &schema, "bench").expect("starts");
                let mut bytes = head.len();
                for batch in &data {
                    bytes += enc.batch(batch).expect("encodes").len();
                }
                bytes
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
