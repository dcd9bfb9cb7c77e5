//! Kith's provisioning: what keeps the box working without an admin.
//! Today: certificates, obtained and renewed with ACME (RFC 8555) and put
//! into `kith-server`'s certificate store without a restart.
//!
//! - `config.rs`: the `[acme]` section;
//! - `manager.rs`: the loop that obtains, stores, installs and renews;
//! - `challenge.rs`: HTTP-01 answers, the TLS-ALPN-01 certificate, the DNS hook;
//! - `dns_update.rs`: DNS-01 through RFC 2136 updates signed with TSIG;
//! - `certinfo.rs`: names, issuer, expiry and renewal time of a certificate;
//! - `errors.rs`: failures said in one line with the fix;
//! - `files.rs`: the account key, certificate, key and status on disk;
//! - `status.rs`: what `kith cert status` shows.
//!
//! It depends on `kith-server`'s store; `kith-server` never names it.

mod certinfo;
mod challenge;
pub mod config;
mod dns_update;
mod errors;
mod files;
mod manager;
mod status;

pub use certinfo::CertInfo;
pub use challenge::Http01Answers;
pub use config::{AcmeConfig, AcmeFile, Challenge};
pub use errors::{Cause, Failure};
pub use files::AcmeDir;
pub use manager::{request_renewal, stored_files, Listeners, Manager};
pub use status::{report, Status};
