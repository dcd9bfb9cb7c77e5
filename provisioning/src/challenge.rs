//! Answering the CA's challenges: HTTP-01 answers the web pod serves under
//! `/.well-known/acme-challenge/`, the TLS-ALPN-01 certificate (RFC 8737)
//! the HTTPS listener presents, and the DNS hook command that sets the
//! DNS-01 TXT record.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// HTTP-01 answers by token, shared with the web pod.
#[derive(Debug, Clone, Default)]
pub struct Http01Answers(Arc<Mutex<HashMap<String, String>>>);

impl Http01Answers {
    /// The key authorization to send for `token`, while a challenge is open.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.0.lock().ok()?.get(token).cloned()
    }

    pub(crate) fn set(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(token.to_string(), key_authorization.to_string());
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

/// The TLS-ALPN-01 certificate for `name`: self-signed, P-256, with the
/// critical acmeIdentifier extension holding SHA-256 of the key
/// authorization. Returns (certificate DER, PKCS#8 key DER).
pub fn tls_alpn_certificate(name: &str, digest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// Longest time a DNS hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Run the DNS hook: `HOOK set|unset _acme-challenge.NAME VALUE`, with the
/// same three in the environment (`KITH_ACME_ACTION`, `KITH_ACME_RECORD`,
/// `KITH_ACME_VALUE`). Its standard error's last line is kept for the error.
pub async fn dns_hook(hook: &Path, action: &str, record: &str, value: &str) -> Result<(), String> {
    let child = tokio::process::Command::new(hook)
        .args([action, record, value])
        .env("KITH_ACME_ACTION", action)
        .env("KITH_ACME_RECORD", record)
        .env("KITH_ACME_VALUE", value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", hook.display()))?;
    let out = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "{} did not finish within {}s",
                hook.display(),
                HOOK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("{}: {e}", hook.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("").trim();
    Err(format!(
        "{} {action} exited with {}: {last}",
        hook.display(),
        out.status
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let (der, key) = tls_alpn_certificate("home.example", &digest).expect("made");
        assert!(!key.is_empty());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        // id-pe-acmeIdentifier 1.3.6.1.5.5.7.1.31, critical, OCTET STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&digest));
    }

    #[tokio::test]
    async fn a_failing_hook_says_why() {
        let e = dns_hook(Path::new("/bin/false"), "set", "_acme-challenge.x", "v")
            .await
            .expect_err("fails");
        assert!(e.contains("exited"), "{e}");
        let e = dns_hook(Path::new("/nonexistent/hook"), "set", "r", "v")
            .await
            .expect_err("missing");
        assert!(e.contains("cannot run"), "{e}");
    }
}
