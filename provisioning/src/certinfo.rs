//! What Kith reads from a certificate: its names, issuer and validity, and
//! when to renew it without advice from the CA (two thirds into its lifetime).

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// The facts of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (subjectAltName).
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate itself (DER), for RFC 9773's certificate identifier.
    pub leaf: Vec<u8>,
}

impl CertInfo {
    /// Read the first certificate of a PEM chain.
    pub fn from_pem(chain_pem: &[u8]) -> Result<Self, String> {
        let (pem, _) = Pem::iter_from_buffer(chain_pem)
            .next()
            .ok_or("no PEM certificate")?
            .map(|p| (p, ()))
            .map_err(|e| format!("not PEM: {e}"))?;
        Self::from_der(&pem.contents)
    }

    /// Read a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| format!("not X.509: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::DNSName(d) = n {
                    names.push(d.to_string());
                }
            }
        }
        Ok(CertInfo {
            names,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            leaf: der.to_vec(),
        })
    }

    /// When to renew without advice from the CA: two thirds into the lifetime.
    pub fn renew_at(&self) -> i64 {
        let life = (self.not_after - self.not_before).max(0);
        self.not_before + life * 2 / 3
    }

    /// Whether the certificate covers every one of `names` (case-insensitive).
    pub fn covers(&self, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| self.names.iter().any(|m| m.eq_ignore_ascii_case(n)))
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2026-12-07 04:10:00 UTC` for a Unix time.
pub fn format_time(t: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_renews_at_two_thirds() {
        let names = vec![
            "home.example".to_string(),
            "groups.home.example".to_string(),
        ];
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000).expect("t");
        params.not_after =
            time::OffsetDateTime::from_unix_timestamp(1_000_000 + 90 * 86_400).expect("t");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let info = CertInfo::from_pem(cert.pem().as_bytes()).expect("info");
        assert_eq!(info.names, names);
        assert!(info.covers(&["GROUPS.home.example".into()]));
        assert!(!info.covers(&["upload.home.example".into()]));
        assert_eq!(info.renew_at(), 1_000_000 + 60 * 86_400);
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    }
}
