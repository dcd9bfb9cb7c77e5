//! Account administration for the CLI and the web pod: add, change password,
//! delete, list, and the FAST tokens of an account's devices (list, revoke). Works on the database directly, with or without a running server.

use jid::BareJid;

use crate::config::Config;
use crate::registry::Registry;
use crate::sasl::StoredCredentials;
use crate::storage::fast::TokenHolder;
use crate::storage::{Db, StorageError};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("'{0}' is not a valid JID of the form user@domain")]
    InvalidJid(String),
    #[error("{jid} is not on this server's domain ({domain})")]
    WrongDomain { jid: String, domain: String },
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the system random number generator failed")]
    Random,
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// Account administration on one server's database.
pub struct Accounts {
    db: Db,
    domain: String,
    iterations: u32,
    retention_days: u32,
}

impl Accounts {
    /// Open the server's database (creating and migrating it if needed).
    pub async fn open(config: &Config) -> Result<Self, AccountError> {
        let registry = Registry::new(&crate::server::modules());
        let db = crate::server::open_db(config, &registry).await?;
        Ok(Accounts {
            db,
            domain: config.domain.clone(),
            iterations: config.scram_iterations,
            retention_days: config.archive.retention_days,
        })
    }

    fn username(&self, jid: &str) -> Result<String, AccountError> {
        let bare = BareJid::new(jid).map_err(|_| AccountError::InvalidJid(jid.to_string()))?;
        let node = bare
            .node()
            .ok_or_else(|| AccountError::InvalidJid(jid.to_string()))?;
        if bare.domain().as_str() != self.domain {
            return Err(AccountError::WrongDomain {
                jid: jid.to_string(),
                domain: self.domain.clone(),
            });
        }
        Ok(node.as_str().to_string())
    }

    fn credentials(&self, password: &str) -> Result<StoredCredentials, AccountError> {
        if password.is_empty() {
            return Err(AccountError::EmptyPassword);
        }
        StoredCredentials::new(password, self.iterations).map_err(|_| AccountError::Random)
    }

    /// Create an account.
    pub async fn add(&self, jid: &str, password: &str) -> Result<(), AccountError> {
        let user = self.username(jid)?;
        let creds = self.credentials(password)?;
        self.db.account_create(&user, &creds).await?;
        Ok(())
    }

    /// Change an account's password.
    pub async fn passwd(&self, jid: &str, password: &str) -> Result<(), AccountError> {
        let user = self.username(jid)?;
        let creds = self.credentials(password)?;
        // Signs out every browser and every FAST token of the account.
        self.db.account_set_credentials(&user, &creds, None).await?;
        Ok(())
    }

    /// Set an account's role: `admin` runs the box, `member` uses it.
    pub async fn set_role(&self, jid: &str, role: crate::Role) -> Result<(), AccountError> {
        let user = self.username(jid)?;
        self.db.account_set_role(&user, role.as_str()).await?;
        Ok(())
    }

    /// An account's role.
    pub async fn role(&self, jid: &str) -> Result<crate::Role, AccountError> {
        let user = self.username(jid)?;
        match self.db.account_role(&user).await? {
            Some(r) => Ok(crate::Role::from_stored(&r)),
            None => Err(StorageError::NotFound(format!("no account {jid}")).into()),
        }
    }

    /// Sign out every browser signed in to the account's web pages; how many were.
    pub async fn sign_out_browsers(&self, jid: &str) -> Result<u64, AccountError> {
        let user = self.username(jid)?;
        Ok(self.db.web_sessions_delete_all(&user).await?)
    }

    /// Delete an account and its data.
    pub async fn delete(&self, jid: &str) -> Result<(), AccountError> {
        let user = self.username(jid)?;
        self.db.account_delete(&user).await?;
        Ok(())
    }

    /// The clients of an account holding FAST tokens (XEP-0484).
    pub async fn tokens(&self, jid: &str) -> Result<Vec<TokenHolder>, AccountError> {
        let user = self.username(jid)?;
        if !self.db.account_exists(&user).await? {
            return Err(StorageError::NotFound(format!("no account {jid}")).into());
        }
        Ok(self.db.fast_holders(&user).await?)
    }

    /// Revoke the FAST tokens of an account (a lost phone): of one device
    /// (its user-agent id, as `tokens` lists it) or of all; returns how many
    /// devices held one. Their next login needs the password.
    pub async fn revoke_tokens(
        &self,
        jid: &str,
        device: Option<&str>,
    ) -> Result<u64, AccountError> {
        let user = self.username(jid)?;
        if !self.db.account_exists(&user).await? {
            return Err(StorageError::NotFound(format!("no account {jid}")).into());
        }
        Ok(match device {
            Some(agent) => u64::from(self.db.fast_invalidate(&user, agent).await?),
            None => self.db.fast_revoke_all(&user).await?,
        })
    }

    /// Every account's bare JID.
    pub async fn list(&self) -> Result<Vec<String>, AccountError> {
        Ok(self
            .db
            .account_list()
            .await?
            .into_iter()
            .map(|u| format!("{u}@{}", self.domain))
            .collect())
    }

    /// Set how many days of history `jid` keeps (`None`: the server's
    /// `archive.retention_days`; `Some(0)`: forever). The running server's
    /// pruner applies it on its next round; [`Accounts::prune_history`] now.
    pub async fn set_retention(&self, jid: &str, days: Option<u32>) -> Result<(), AccountError> {
        let user = self.username(jid)?;
        if !self.db.account_exists(&user).await? {
            return Err(StorageError::NotFound(format!("no account {jid}")).into());
        }
        self.db.archive_set_retention(&user, days).await?;
        Ok(())
    }

    /// Delete the history that is past every account's retention now;
    /// returns how many messages were deleted.
    pub async fn prune_history(&self) -> Result<u64, AccountError> {
        let mut total = 0;
        loop {
            let n = crate::mam::retention::prune_once(&self.db, self.retention_days).await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Close the database.
    pub async fn close(self) {
        self.db.close().await;
    }
}
