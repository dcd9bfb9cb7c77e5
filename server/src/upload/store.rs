//! Uploaded files on disk, for the web pod: checking a PUT against its signed
//! slot, the temporary file it streams into, the atomic commit (fsync, rename,
//! then the database row; a file without a row is never served), lookups for
//! GET, and the retention sweep.
//!
//! Layout: `data_dir/uploads/tmp/<id>.part` while uploading,
//! `data_dir/uploads/files/<id>` when complete.

use std::path::PathBuf;
use std::sync::Arc;

use super::slot::Slot;
use crate::core::Core;
use crate::storage::uploads::{Insert, UploadRow};

/// The upload store, as the web pod sees it.
#[derive(Clone)]
pub struct Uploads {
    core: Arc<Core>,
}

/// A PUT that matches a valid, unexpired slot.
#[derive(Debug, Clone)]
pub struct PutGrant {
    slot: Slot,
}

/// Why a PUT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PutRefused {
    #[error("the slot URL is not valid")]
    BadSignature,
    #[error("the slot has expired")]
    Expired,
    #[error("this slot was already used")]
    Exists,
    #[error("the upload would exceed the account's quota")]
    OverQuota,
    #[error("the file could not be stored")]
    Storage,
}

/// A complete file, for GET.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub path: PathBuf,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// The query of a PUT URL, as received.
#[derive(Debug, Clone, Default)]
pub struct PutQuery {
    pub size: u64,
    pub content_type: String,
    pub owner: String,
    pub expires: i64,
    pub sig: String,
}

pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl PutGrant {
    /// Bytes the body must have.
    pub fn size(&self) -> u64 {
        self.slot.size
    }
    /// The MIME type named in the slot request.
    pub fn content_type(&self) -> &str {
        &self.slot.content_type
    }
}

impl Uploads {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Uploads { core }
    }

    fn dir(&self) -> PathBuf {
        self.core.config.data_dir.join("uploads")
    }

    /// Check a PUT against the slot its URL claims.
    pub async fn authorize_put(
        &self,
        id: &str,
        filename: &str,
        q: PutQuery,
    ) -> Result<PutGrant, PutRefused> {
        if !valid_id(id) {
            return Err(PutRefused::BadSignature);
        }
        let slot = Slot {
            id: id.to_string(),
            filename: filename.to_string(),
            size: q.size,
            content_type: q.content_type,
            owner: q.owner,
            expires: q.expires,
        };
        let secret = super::secret(&self.core)
            .await
            .map_err(|_| PutRefused::Storage)?;
        if !slot.verify(&secret, &q.sig) {
            return Err(PutRefused::BadSignature);
        }
        if super::now() > slot.expires {
            return Err(PutRefused::Expired);
        }
        let exists = self
            .core
            .db
            .upload_get(id)
            .await
            .map_err(|_| PutRefused::Storage)?;
        if exists.is_some() {
            return Err(PutRefused::Exists);
        }
        Ok(PutGrant { slot })
    }

    /// Create the temporary file the body streams into (fails if another PUT
    /// of the same slot is in progress).
    pub async fn create_tmp(&self, grant: &PutGrant) -> Result<tokio::fs::File, PutRefused> {
        let dir = self.dir().join("tmp");
        crate::files::private_dir(&dir).map_err(|_| PutRefused::Storage)?;
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::files::FILE_MODE)
            .open(self.tmp_path(grant))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => PutRefused::Exists,
                _ => PutRefused::Storage,
            })
    }

    fn tmp_path(&self, grant: &PutGrant) -> PathBuf {
        self.dir()
            .join("tmp")
            .join(format!("{}.part", grant.slot.id))
    }

    /// Throw away an unfinished upload.
    pub async fn abort(&self, grant: &PutGrant) {
        let _ = tokio::fs::remove_file(self.tmp_path(grant)).await;
    }

    /// Publish a complete upload: the caller has written and synced exactly
    /// `size` bytes into the temporary file. Rename, sync the directory, then
    /// record it (within the quota, in one transaction).
    pub async fn commit(&self, grant: &PutGrant) -> Result<(), PutRefused> {
        let files = self.dir().join("files");
        let tmp = self.tmp_path(grant);
        let path = files.join(&grant.slot.id);
        let moved = async {
            crate::files::private_dir(&files)?;
            tokio::fs::rename(&tmp, &path).await?;
            tokio::fs::File::open(&files).await?.sync_all().await
        }
        .await;
        if moved.is_err() {
            self.abort(grant).await;
            return Err(PutRefused::Storage);
        }
        let row = UploadRow {
            id: grant.slot.id.clone(),
            owner: grant.slot.owner.clone(),
            filename: grant.slot.filename.clone(),
            content_type: grant.slot.content_type.clone(),
            size: grant.slot.size,
            created: super::now(),
        };
        let r = match self
            .core
            .db
            .upload_insert(&row, self.core.config.upload.quota)
            .await
        {
            Ok(Insert::Stored) => return Ok(()),
            Ok(Insert::Exists) => return Err(PutRefused::Exists),
            Ok(Insert::OverQuota) => PutRefused::OverQuota,
            Err(_) => PutRefused::Storage,
        };
        let _ = tokio::fs::remove_file(&path).await;
        Err(r)
    }

    /// A stored file by id, if `filename` is its name.
    pub async fn get(&self, id: &str, filename: &str) -> Option<StoredFile> {
        if !valid_id(id) {
            return None;
        }
        let row = self.core.db.upload_get(id).await.ok()??;
        (row.filename == filename).then(|| StoredFile {
            path: self.dir().join("files").join(&row.id),
            filename: row.filename,
            content_type: row.content_type,
            size: row.size,
        })
    }

    /// Delete files older than the retention time and leftover temporary
    /// files; returns how many files were deleted.
    pub async fn sweep(&self) -> usize {
        // Nothing is deleted for its age by a clock that is not confirmed.
        if !self.core.clock.confirmed() {
            return 0;
        }
        let retention = self.core.config.upload.retention.as_secs() as i64;
        let before = super::now() - retention;
        let mut deleted = 0;
        while let Ok(ids) = self.core.db.upload_expired(before, 100).await {
            if ids.is_empty() {
                break;
            }
            for id in ids {
                if self.core.db.upload_delete(&id).await.is_err() {
                    return deleted;
                }
                let _ = tokio::fs::remove_file(self.dir().join("files").join(&id)).await;
                deleted += 1;
            }
        }
        // Temporary files older than a slot's lifetime plus a day are leftovers.
        let stale = self.core.config.upload.slot_lifetime + std::time::Duration::from_secs(86400);
        if let Ok(mut rd) = tokio::fs::read_dir(self.dir().join("tmp")).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let old = e
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > stale);
                if old && tokio::fs::remove_file(e.path()).await.is_ok() {
                    deleted += 1;
                }
            }
        }
        deleted
    }
}
