//! `cert`: writes the self-signed certificate and key that every server in a run shares.

use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{date_time_ymd, CertificateParams, KeyPair};

/// Writes `cert.pem` and `key.pem` (ECDSA P-256) for `domain` into `dir`.
///
/// The validity is an ordinary ten years: ejabberd's certificate manager fails to start
/// on rcgen's default end date (year 4096).
pub fn write_self_signed(domain: &str, dir: &Path) -> Result<()> {
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let mut params = CertificateParams::new(names).context("certificate names")?;
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2034, 1, 1);
    let key = KeyPair::generate().context("generating key")?;
    let cert = params.self_signed(&key).context("signing certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    std::fs::write(&key_path, key.serialize_pem())
        .with_context(|| format!("writing {}", key_path.display()))?;
    Ok(())
}
