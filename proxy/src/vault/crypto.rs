//! Envelope of a vault record: AES-256-GCM under a key-encryption key (KEK) named by its id.
//!
//! - The KEK is 32 random bytes, base64, from an environment variable or a file — never the
//!   configuration file. Its id is derived from the key (`SHA-256("sluice-vault-kid" || key)`,
//!   first 8 bytes, hex), so a record names the key that sealed it without revealing it.
//! - Nonces are 96 random bits from the OS for every seal. Under one key, the chance of a repeat
//!   stays below 2^-32 for the first 2^32 seals; records are re-sealed on every write, so a
//!   deployment that rotates its KEK yearly stays far below that.
//! - The associated data binds a ciphertext to its tenant, user, connection and record version:
//!   a ciphertext copied into another user's row, or an older version replayed into a row, fails
//!   to open.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use zeroize::Zeroizing;

/// Length of a KEK in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of a nonce in bytes.
pub const NONCE_BYTES: usize = 12;
/// Version tag of the associated-data layout.
const AAD_VERSION: &str = "sluice-vault-v1";

/// Why a record could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The record names a key id this keyring does not hold.
    #[error("vault record sealed with unknown key id {0}")]
    UnknownKey(String),
    /// Authentication failed: tampered ciphertext, wrong row, or wrong version.
    #[error("vault record does not authenticate (tampered, or not this user's)")]
    Tampered,
    /// The key material is unusable.
    #[error("vault key: {0}")]
    BadKey(String),
    /// No randomness from the OS.
    #[error("no randomness available")]
    NoRandomness,
}

/// What a ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// Tenant of the owner.
    pub tenant: &'a str,
    /// User who owns the credential.
    pub user: &'a str,
    /// Connection it is for.
    pub connection: &'a str,
    /// Record version (incremented on every write).
    pub version: i64,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        // Length-prefixed fields: no two bindings serialize alike.
        let mut out = Vec::with_capacity(64);
        for part in [AAD_VERSION, self.tenant, self.user, self.connection] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// A sealed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the KEK that sealed it.
    pub key_id: String,
    /// The nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

/// The id of a key.
pub fn key_id(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"sluice-vault-kid");
    ctx.update(key);
    hex::encode(&ctx.finish().as_ref()[..8])
}

/// Decodes a base64 KEK (standard or URL alphabet, padding optional).
pub fn decode_key(text: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let t = text.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for e in engines {
        if let Ok(raw) = e.decode(t) {
            let raw = Zeroizing::new(raw);
            if raw.len() != KEY_BYTES {
                return Err(CryptoError::BadKey(format!(
                    "must be {KEY_BYTES} bytes, base64 (got {})",
                    raw.len()
                )));
            }
            return Ok(raw);
        }
    }
    Err(CryptoError::BadKey("not base64".into()))
}

/// A fresh random KEK, base64 (for `sluice vault new-key`).
pub fn new_key() -> Result<String, CryptoError> {
    let mut raw = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(raw.as_mut()).map_err(|_| CryptoError::NoRandomness)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw.as_ref()))
}

/// The current KEK, and older ones still able to open records sealed before a rotation.
pub struct Keyring {
    current: String,
    ciphers: HashMap<String, Aes256Gcm>,
}

impl Keyring {
    /// A keyring sealing with `current` and opening with it and `previous`.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Result<Keyring, CryptoError> {
        let mut ciphers = HashMap::new();
        for k in std::iter::once(&current).chain(previous.iter()) {
            if k.len() != KEY_BYTES {
                return Err(CryptoError::BadKey(format!("must be {KEY_BYTES} bytes")));
            }
            ciphers.insert(key_id(k), Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k)));
        }
        Ok(Keyring {
            current: key_id(current),
            ciphers,
        })
    }

    /// Id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seals `plaintext` for `binding` under the current key.
    pub fn seal(&self, plaintext: &[u8], binding: &Binding<'_>) -> Result<Sealed, CryptoError> {
        let cipher = self
            .ciphers
            .get(&self.current)
            .ok_or_else(|| CryptoError::UnknownKey(self.current.clone()))?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::NoRandomness)?;
        let aad = binding.aad();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed record for `binding`; the plaintext is wiped when dropped.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: &Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let cipher = self
            .ciphers
            .get(&sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(CryptoError::Tampered);
        }
        let aad = binding.aad();
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b<'a>(user: &'a str, version: i64) -> Binding<'a> {
        Binding {
            tenant: "acme",
            user,
            connection: "wh",
            version,
        }
    }

    #[test]
    fn round_trip_and_every_tamper_fails() {
        let k = Keyring::new(&[1u8; 32], &[]).unwrap();
        let s = k.seal(b"token", &b("alice", 1)).unwrap();
        assert_eq!(k.open(&s, &b("alice", 1)).unwrap().as_slice(), b"token");
        // Another user's row, another version, another connection or tenant.
        assert_eq!(k.open(&s, &b("bob", 1)), Err(CryptoError::Tampered));
        assert_eq!(k.open(&s, &b("alice", 2)), Err(CryptoError::Tampered));
        let other_conn = Binding {
            connection: "wh2",
            ..b("alice", 1)
        };
        assert_eq!(k.open(&s, &other_conn), Err(CryptoError::Tampered));
        let other_tenant = Binding {
            tenant: "globex",
            ..b("alice", 1)
        };
        assert_eq!(k.open(&s, &other_tenant), Err(CryptoError::Tampered));
        // A flipped bit anywhere.
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(k.open(&t, &b("alice", 1)), Err(CryptoError::Tampered));
        }
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert_eq!(k.open(&t, &b("alice", 1)), Err(CryptoError::Tampered));
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // ("ab", "c") and ("a", "bc") must not share associated data.
        let x = Binding {
            tenant: "t",
            user: "ab",
            connection: "c",
            version: 1,
        };
        let y = Binding {
            tenant: "t",
            user: "a",
            connection: "bc",
            version: 1,
        };
        assert_ne!(x.aad(), y.aad());
    }

    #[test]
    fn unknown_key_id_and_rotation() {
        let old = Keyring::new(&[1u8; 32], &[]).unwrap();
        let s = old.seal(b"token", &b("alice", 1)).unwrap();
        let other = Keyring::new(&[2u8; 32], &[]).unwrap();
        assert_eq!(
            other.open(&s, &b("alice", 1)),
            Err(CryptoError::UnknownKey(key_id(&[1u8; 32])))
        );
        // After rotation the old key still opens, the new one seals.
        let rotated = Keyring::new(&[2u8; 32], &[&[1u8; 32]]).unwrap();
        assert_eq!(
            rotated.open(&s, &b("alice", 1)).unwrap().as_slice(),
            b"token"
        );
        let s2 = rotated.seal(b"token", &b("alice", 2)).unwrap();
        assert_eq!(s2.key_id, key_id(&[2u8; 32]));
    }

    #[test]
    fn nonces_do_not_repeat() {
        let k = Keyring::new(&[3u8; 32], &[]).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            assert!(seen.insert(k.seal(b"x", &b("u", i)).unwrap().nonce));
        }
    }

    #[test]
    fn keys_decode_from_base64_and_bad_ones_are_refused() {
        let text = new_key().unwrap();
        assert_eq!(decode_key(&text).unwrap().len(), 32);
        assert!(decode_key("c2hvcnQ=").is_err());
        assert!(decode_key("not base64 !!").is_err());
    }
}
