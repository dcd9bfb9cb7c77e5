//! Kith's XMPP server.
//!
//! The public surface is small: [`Config`] to describe a server, [`Server`] to
//! run one, and [`Accounts`] to manage users. Everything else is internal and
//! organised as in Prosody: a core (streams, router, sessions, storage) and one
//! module per protocol area that registers what it handles.

mod accounts;
#[cfg(feature = "bench-support")]
pub mod bench_support;
mod blocking;
mod clock;
mod component;
pub mod config;
pub mod config_file;
mod core;
mod credentials;
mod deliver;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod iq_out;
mod limits;
mod mam;
mod message;
mod muc;
mod presence;
mod pubsub;
mod push;
mod registry;
mod roster;
mod router;
mod s2s;
pub mod sasl;
mod server;
mod session;
mod sm;
mod stanza;
mod storage;
mod stream;
pub mod tls;
mod upload;
mod web;
mod xep;
pub mod xml;

pub use accounts::{AccountError, Accounts};
pub use config::{
    Archive, Config, Limits, Listen, MucConfig, PingConfig, PushConfig, S2s, Secret, TimeSync,
    TlsFiles, UploadConfig,
};
pub use credentials::{
    PasswordChangeError, PasswordRefused, Role, VerifiedAccount, MAX_ADDRESS_BYTES,
    MAX_PASSWORD_BYTES,
};
pub use limits::{addr_key, ConnLimiter, ConnPermit};
pub use server::{BoundAddrs, Server, StartError};
pub use storage::fast::TokenHolder;
pub use storage::web_sessions::WebSessionRow as WebSession;
pub use stream::framed::{FramedError, FramedReceiver, FramedSender, NS_FRAMING};
pub use upload::{PutGrant, PutQuery, PutRefused, StoredFile, Uploads};
pub use web::WebHandle;
pub use xep::fast::datetime as fast_datetime;
