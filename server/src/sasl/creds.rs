//! Stored SCRAM credentials (RFC 5802 §3): salt, iteration count, StoredKey and
//! ServerKey for SHA-1 and SHA-256. Derived once from the password, which is
//! then forgotten.

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use std::num::NonZeroU32;

/// The hash functions of the SCRAM family Kith supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    pub(crate) fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => hmac::HMAC_SHA256,
        }
    }
    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let k = hmac::Key::new(self.hmac_alg(), key);
        hmac::sign(&k, data).as_ref().to_vec()
    }
}

/// SCRAM keys for one hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramKeys {
    /// Derive from a password with the given salt and iteration count.
    pub fn derive(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(hash, password, salt, iterations);
        Self::from_salted(hash, &salted, salt, iterations)
    }

    fn from_salted(hash: Hash, salted: &[u8], salt: &[u8], iterations: u32) -> Self {
        let client_key = hash.hmac(salted, b"Client Key");
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
        }
    }

    /// Whether `password` matches these keys (for PLAIN), in constant time.
    pub fn verify_password(&self, hash: Hash, password: &str) -> bool {
        let other = Self::derive(hash, password, &self.salt, self.iterations);
        subtle::ConstantTimeEq::ct_eq(&other.stored_key[..], &self.stored_key[..]).into()
    }
}

/// SaltedPassword := Hi(Normalize(password), salt, i).
pub fn salted_password(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; hash.output_len()];
    let iterations = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        hash.pbkdf2_alg(),
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// Everything stored for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub sha1: ScramKeys,
    pub sha256: ScramKeys,
}

impl StoredCredentials {
    /// Fresh credentials for a password: a random 16-byte salt per hash.
    /// Fails only if the system random number generator does.
    pub fn new(password: &str, iterations: u32) -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let mut salt1 = [0u8; 16];
        let mut salt256 = [0u8; 16];
        rng.fill(&mut salt1)?;
        rng.fill(&mut salt256)?;
        Ok(StoredCredentials {
            sha1: ScramKeys::derive(Hash::Sha1, password, &salt1, iterations),
            sha256: ScramKeys::derive(Hash::Sha256, password, &salt256, iterations),
        })
    }

    /// The keys for one hash.
    pub fn keys(&self, hash: Hash) -> &ScramKeys {
        match hash {
            Hash::Sha1 => &self.sha1,
            Hash::Sha256 => &self.sha256,
        }
    }
}
