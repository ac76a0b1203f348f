//! The vault on the query path: what a query with a per-user credential pays to get it.
//! - `open_only`: AES-256-GCM open of a sealed OAuth credential (with its associated data) and
//!   JSON decoding of the secret;
//! - `get_from_store`: the whole read the query path does: SQLite point lookup, open, decode.
#![allow(clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::vault::crypto::{Binding, Keyring};
use sluice::vault::store::{CredentialStore, Owner, Secret, Status, VaultStore, Write};

fn vault(c: &mut Criterion) {
    let keys = Keyring::new(&[7u8; 32], &[]).expect("bench setup");
    let dir = tempfile::tempdir().expect("bench setup");
    let store = VaultStore::open(&dir.path().join("vault.sqlite")).expect("bench setup");
    let owner = Owner {
        tenant: "acme".into(),
        user: "alice".into(),
        connection: "snowflake".into(),
    };
    // Token sizes of a real warehouse: ~1 KB access token, ~100 B refresh token.
    let secret = Secret {
        access_token: Some("a".repeat(1024)),
        refresh_token: Some("r".repeat(100)),
        password: None,
    };
    let write = Write {
        kind: "oauth",
        status: Status::Connected,
        scopes: "session:role:analyst",
        expires_at: Some(i64::MAX / 2),
        refresh_due_at: Some(i64::MAX / 2),
        failures: 0,
        secret: &secret,
    };
    let version = store
        .put(&owner, &keys, &write, None, 0)
        .expect("bench setup");
    let plain = serde_json::to_vec(&secret).expect("bench setup");
    let binding = Binding {
        tenant: "acme",
        user: "alice",
        connection: "snowflake",
        version,
    };
    let sealed = keys.seal(&plain, &binding).expect("bench setup");

    let mut g = c.benchmark_group("vault");
    g.bench_function("open_only", |b| {
        b.iter(|| {
            let p = keys.open(&sealed, &binding).expect("opens");
            let s: Secret = serde_json::from_slice(&p).expect("decodes");
            s
        })
    });
    g.bench_function("get_from_store", |b| {
        b.iter(|| store.get(&owner, &keys).expect("reads").expect("exists"))
    });
    g.finish();
}

criterion_group!(benches, vault);
criterion_main!(benches);
