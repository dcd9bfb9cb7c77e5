//! SASL (RFC 6120 §6): the mechanisms Kith offers and the credentials it stores.
//!
//! Offered, strongest first: SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS (channel binding
//! `tls-exporter` or `tls-server-end-point`, advertised via XEP-0440),
//! SCRAM-SHA-256, SCRAM-SHA-1, and PLAIN — all only inside TLS, since STARTTLS
//! is mandatory. Only SCRAM keys are stored, never the password.

mod creds;
pub mod ht;
mod plain;
mod scram;

pub use creds::{Hash, ScramKeys, StoredCredentials};
pub use plain::parse_plain;
pub use scram::{ScramError, ScramServer};

/// A mechanism name Kith implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// All mechanisms in preference order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Look up by IANA name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this mechanism binds to the TLS channel.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, if a SCRAM mechanism.
    pub fn scram_hash(self) -> Option<Hash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(Hash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(Hash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// SASL failure conditions (RFC 6120 §6.5) Kith sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Aborted,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    NotAuthorized,
    TemporaryAuthFailure,
    EncryptionRequired,
    /// The credentials (a FAST token) expired (RFC 6120 §6.5.2).
    CredentialsExpired,
}

impl Failure {
    /// The condition element name.
    pub fn condition(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
            Failure::EncryptionRequired => "encryption-required",
            Failure::CredentialsExpired => "credentials-expired",
        }
    }
}
