//! `cert`: writes the self-signed certificate and key that every server in a run shares.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `cert.pem` and `key.pem` (ECDSA P-256) for `domain` into `dir`.
pub fn write_self_signed(domain: &str, dir: &Path) -> Result<()> {
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let certified = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&key, certified.signing_key.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}
