//! Per-request authentication cost: what every query pays before the policy runs. Guards the
//! authentication issue's bench and the performance issue's budget (HS256 verification at most
//! 5 µs). Benches:
//! - `session_lookup_warm`: a session bearer token, from the in-memory cache (SHA-256 of the
//!   token, one map lookup, idle renewal);
//! - `session_lookup_store`: the same, from the SQLite store (first use after a restart);
//! - `hs256_verify`: a customer-signed HS256 JWT;
//! - `es256_verify_warm_jwks`: an ES256 JWT whose key comes from a JWKS URL already fetched;
//! - `authenticate_request_*`: the whole `Authenticator::authenticate` for a bearer credential
//!   (rate-limit check, dispatch by form, verification).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sluice::auth::jwt::JwtVerifier;
use sluice::auth::store::{AuthStore, NewToken, TokenKind};
use sluice::auth::{AuthMethod, Authenticator, ClientInfo, Credential, Principal};
use sluice::config::{AuthConfig, Config, JwtAlgorithm, JwtConfig};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench";

fn jwt_config(alg: JwtAlgorithm, jwks_url: Option<String>) -> JwtConfig {
    let base = Config::parse(
        "[auth.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"X\"\nissuer = \"iss\"\naudience = \"aud\"\n",
    )
    .expect("bench setup");
    let mut jwt = base.auth.jwt.expect("bench setup");
    jwt.algorithm = alg;
    if jwks_url.is_some() {
        jwt.secret_env = None;
        jwt.jwks_url = jwks_url;
    }
    jwt
}

fn auth_config() -> AuthConfig {
    Config::parse("[auth]\n").expect("bench setup").auth
}

fn claims() -> serde_json::Value {
    let now = chrono_now();
    json!({"sub": "alice", "tenant": "acme", "groups": ["analyst"], "iss": "iss", "aud": "aud",
           "iat": now, "exp": now + 3600})
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Serves one ES256 public key as a JWKS on loopback; returns its URL and the signing key.
async fn jwks_server() -> (String, EncodingKey) {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let doc = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                               "x": b64(&p[1..33]), "y": b64(&p[33..65])}]});
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, EncodingKey::from_ec_der(pkcs8.as_ref()))
}

fn auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench setup");
    let dir = tempfile::tempdir().expect("bench setup");
    let store = Arc::new(AuthStore::open(&dir.path().join("auth.sqlite")).expect("bench setup"));

    // A session in the store.
    let principal = Principal {
        user: "alice".into(),
        tenant: "acme".into(),
        groups: vec!["analyst".into()],
        attributes: Default::default(),
        method: AuthMethod::TicketSession,
        session_id: Some("s-1".into()),
    };
    let session = "sls_benchmarksessiontoken0000000000000000000";
    let now = chrono_now();
    store
        .insert(&NewToken {
            kind: TokenKind::Session,
            token: session,
            id: "s-1",
            principal: &principal,
            client_id: None,
            now,
            expires: now + 3600,
            max_expires: now + 7200,
        })
        .expect("bench setup");

    let hs = JwtVerifier::new(&jwt_config(JwtAlgorithm::HS256, None), Some(SECRET), None)
        .expect("bench setup");
    let hs_token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("bench setup");
    let (url, es_key) = rt.block_on(jwks_server());
    let es = JwtVerifier::new(&jwt_config(JwtAlgorithm::ES256, Some(url)), None, None)
        .expect("bench setup");
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let es_token = jsonwebtoken::encode(&h, &claims(), &es_key).expect("bench setup");
    // Warm the JWKS cache.
    rt.block_on(es.verify(&es_token, &store))
        .expect("bench setup");

    let sessions = Authenticator::new(None, Arc::clone(&store), &auth_config());
    rt.block_on(sessions.session(session)).expect("bench setup");
    let hs_auth = Authenticator::new(
        Some(
            JwtVerifier::new(&jwt_config(JwtAlgorithm::HS256, None), Some(SECRET), None)
                .expect("bench setup"),
        ),
        Arc::clone(&store),
        &auth_config(),
    );
    let client = ClientInfo {
        addr: Some("127.0.0.1".parse().expect("addr")),
        user_agent: None,
        front_door: None,
    };

    let mut g = c.benchmark_group("auth");
    g.bench_function("session_lookup_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { sessions.session(session).await.expect("valid") })
    });
    let hash = sluice::auth::token_hash(session);
    g.bench_function("session_lookup_store", |b| {
        b.to_async(&rt).iter(|| async {
            sessions.forget_sessions(&[hash]);
            sessions.session(session).await.expect("valid")
        })
    });
    g.bench_function("hs256_verify", |b| {
        b.to_async(&rt)
            .iter(|| async { hs.verify(&hs_token, &store).await.expect("valid") })
    });
    g.bench_function("es256_verify_warm_jwks", |b| {
        b.to_async(&rt)
            .iter(|| async { es.verify(&es_token, &store).await.expect("valid") })
    });
    g.bench_function("authenticate_request_session", |b| {
        b.to_async(&rt).iter(|| async {
            sessions
                .authenticate(Credential::Bearer(session), &client)
                .await
                .expect("valid")
        })
    });
    g.bench_function("authenticate_request_hs256", |b| {
        b.to_async(&rt).iter(|| async {
            hs_auth
                .authenticate(Credential::Bearer(&hs_token), &client)
                .await
                .expect("valid")
        })
    });
    g.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
