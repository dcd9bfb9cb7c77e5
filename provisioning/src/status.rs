//! The certificate manager's state as `kith cert status` shows it (and the
//! log, and later the health page): which certificate is in use, its names,
//! issuer and expiry, the next renewal and the last error. Kept in
//! `DATA_DIR/acme/status.json`, written by the running service.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::certinfo::{format_time, CertInfo};
use crate::files::AcmeDir;

/// What the manager last did and will do next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub enabled: bool,
    pub directory: String,
    pub challenge: String,
    /// The names the certificate must cover.
    pub names: Vec<String>,
    /// When the manager will next ask the CA (Unix seconds).
    pub next_attempt: Option<i64>,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    /// The last attempt's failure, one line with the fix; `None` after a success.
    pub last_error: Option<String>,
    /// The CA's suggested renewal window (RFC 9773), when it offers one.
    #[serde(default)]
    pub renewal_info: Option<String>,
}

impl Status {
    /// The stored status, if any.
    pub fn read(dir: &AcmeDir) -> Option<Status> {
        let text = std::fs::read(dir.status()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(crate) fn write(&self, dir: &AcmeDir) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        dir.write(&dir.status(), &text)
    }
}

/// The report `kith cert status` prints.
pub fn report(data_dir: &Path) -> String {
    let dir = AcmeDir::new(data_dir);
    let status = Status::read(&dir);
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<14}{v}\n"));
    let acme_cert = std::fs::read(dir.cert())
        .ok()
        .and_then(|pem| CertInfo::from_pem(&pem).ok());
    let in_use = match &acme_cert {
        Some(info) => {
            line(
                "certificate",
                &format!("from the CA, {}", dir.cert().display()),
            );
            Some(info.clone())
        }
        None => {
            let why = match &status {
                Some(s) if s.enabled => s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no certificate from the CA yet".into()),
                _ => "acme.enabled is off (kith settings set acme.enabled true)".into(),
            };
            line("certificate", &format!("self-signed; reason: {why}"));
            std::fs::read(data_dir.join("tls/cert.pem"))
                .ok()
                .and_then(|pem| CertInfo::from_pem(&pem).ok())
        }
    };
    if let Some(info) = &in_use {
        line("names", &info.names.join(", "));
        line("issuer", &info.issuer);
        line("expires", &format_time(info.not_after));
    }
    match &status {
        Some(s) => {
            line("acme", if s.enabled { "on" } else { "off" });
            line("directory", &s.directory);
            line("challenge", &s.challenge);
            if let Some(t) = s.next_attempt {
                let label = if acme_cert.is_some() {
                    "next renewal"
                } else {
                    "next attempt"
                };
                line(label, &format_time(t));
            }
            if let Some(w) = &s.renewal_info {
                line("renewal info", w);
            }
            if let Some(t) = s.last_success {
                line("last renewal", &format_time(t));
            }
            line("last error", s.last_error.as_deref().unwrap_or("none"));
        }
        None => line(
            "acme",
            "the service has not run the certificate manager yet",
        ),
    }
    out
}
