//! What the certificate manager keeps in `DATA_DIR/acme/`: the account key
//! (`account.key`, PKCS#8 PEM, created once and kept), the certificate chain
//! (`cert.pem`) and its key (`key.pem`), the status (`status.json`) and the
//! renew request `kith cert renew` leaves (`renew`). Every file is written
//! through `kith_server::files::write_atomic`: temporary file, fsync, rename,
//! fsync of the folder, mode 0600; the folder is 0700.

use std::path::{Path, PathBuf};

/// The manager's folder and the files in it.
#[derive(Debug, Clone)]
pub struct AcmeDir {
    dir: PathBuf,
}

impl AcmeDir {
    /// `DATA_DIR/acme`.
    pub fn new(data_dir: &Path) -> Self {
        AcmeDir {
            dir: data_dir.join("acme"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn account_key(&self) -> PathBuf {
        self.dir.join("account.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    pub fn renew_request(&self) -> PathBuf {
        self.dir.join("renew")
    }

    /// Write `data` to `path` atomically and durably, 0600, creating the folder.
    pub fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        kith_server::files::private_dir(&self.dir)?;
        kith_server::files::write_atomic(path, data)
    }

    /// The stored chain and key, if both exist.
    pub fn stored_pair(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let cert = std::fs::read(self.cert()).ok()?;
        let key = std::fs::read(self.key()).ok()?;
        Some((cert, key))
    }

    /// Store a new pair: the key first, so a power cut between the two
    /// leaves an old chain with a new key, which fails the key check at the
    /// next start and is asked for again (never a broken pair in use).
    pub fn store_pair(&self, chain_pem: &[u8], key_pem: &[u8]) -> std::io::Result<()> {
        self.write(&self.key(), key_pem)?;
        self.write(&self.cert(), chain_pem)
    }
}
