//! Passwords checked outside an XMPP stream: the web pod's sign-in form and
//! its "change password" form. The same keys, limits and answers as an XMPP
//! login with PLAIN: the password is checked against the stored SCRAM-SHA-256
//! keys (never stored itself), the attempt is counted by [`AuthLimiter`] under
//! the caller's address and the account when it starts, and an unknown
//! account costs the same PBKDF2 work as a wrong password.
//!
//! [`AuthLimiter`]: crate::limits::AuthLimiter

use std::net::IpAddr;

use crate::core::Core;
use crate::limits::{Proof, Throttled};
use crate::sasl::{Hash, ScramKeys, StoredCredentials};
use crate::storage::StorageError;
use crate::stream::c2s::normalize_user;

/// The longest new password the web pod accepts, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest address accepted (RFC 7622 allows 3071 bytes for a whole JID).
pub const MAX_ADDRESS_BYTES: usize = 3071;

/// What an account may do on the box's web pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the box: the admin pages.
    Admin,
    /// Uses the box.
    Member,
}

impl Role {
    /// The role stored as `s` (`admin` or `member`); anything else is a member.
    pub fn from_stored(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Member
        }
    }

    /// How the role is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// An account whose password was just checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccount {
    /// The local part (`alice`).
    pub username: String,
    /// The bare JID (`alice@example.org`).
    pub jid: String,
    pub role: Role,
}

/// Why a password was not accepted. The same answer for an unknown account
/// and a wrong password, so the answer does not tell which accounts exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefused {
    #[error("wrong address or password")]
    Wrong,
    /// Too many attempts from this address in the last minute.
    #[error("too many sign-in attempts from your address; wait a minute")]
    TooManyFromAddress,
    /// Too many attempts on this account from addresses it does not know.
    #[error("too many sign-in attempts on this account; wait a minute")]
    TooManyForAccount,
    /// The database could not be read (logged).
    #[error("the box could not check the password")]
    Unavailable,
}

impl From<Throttled> for PasswordRefused {
    fn from(t: Throttled) -> Self {
        match t {
            Throttled::Address => PasswordRefused::TooManyFromAddress,
            Throttled::Account => PasswordRefused::TooManyForAccount,
        }
    }
}

/// Whether `password` is `username`'s. An unknown account costs the same
/// PBKDF2 work as a known one. Not limited: callers count the attempt first.
pub(crate) async fn check_password(
    core: &Core,
    username: &str,
    password: &str,
) -> Result<bool, StorageError> {
    let creds = core.db.account_credentials(username).await?;
    Ok(match creds {
        Some(c) => c.sha256.verify_password(Hash::Sha256, password),
        None => {
            let decoy = ScramKeys::derive(
                Hash::Sha256,
                password,
                &core.scram_secret,
                core.config.scram_iterations,
            );
            // Always false; keeps the work from being optimised away.
            decoy.stored_key.is_empty()
        }
    })
}

/// The local part of `address` on this server: `alice` or `alice@DOMAIN`.
fn local_part(address: &str, domain: &str) -> Option<String> {
    let address = address.trim();
    if address.is_empty() || address.len() > MAX_ADDRESS_BYTES {
        return None;
    }
    let user = match address.rsplit_once('@') {
        Some((u, d)) if d.eq_ignore_ascii_case(domain) => u,
        Some(_) => return None,
        None => address,
    };
    normalize_user(user, domain)
}

/// Check `password` for `address` (`alice` or `alice@DOMAIN`) tried from `ip`,
/// with the limits of an XMPP password login.
pub(crate) async fn verify_password(
    core: &Core,
    ip: IpAddr,
    address: &str,
    password: &str,
) -> Result<VerifiedAccount, PasswordRefused> {
    let username = local_part(address, &core.domain);
    // Malformed addresses are counted under the address only, like SCRAM's
    // unknown names: under a key no real account has.
    let key = username.clone().unwrap_or_else(|| "\0invalid".to_string());
    let attempt = core
        .auth_limiter
        .begin(ip, &key, Proof::Password)
        .await
        .map_err(PasswordRefused::from)?;
    let storage = |e: StorageError| {
        tracing::error!(error = %e, "credential lookup failed");
        PasswordRefused::Unavailable
    };
    let ok = check_password(core, username.as_deref().unwrap_or(""), password)
        .await
        .map_err(storage)?;
    let Some(username) = username.filter(|_| ok) else {
        drop(attempt);
        return Err(PasswordRefused::Wrong);
    };
    let role = core.db.account_role(&username).await.map_err(storage)?;
    let Some(role) = role else {
        // Deleted between the two reads.
        return Err(PasswordRefused::Wrong);
    };
    attempt.succeeded();
    Ok(VerifiedAccount {
        jid: format!("{username}@{}", core.domain),
        username,
        role: Role::from_stored(&role),
    })
}

/// Why a password change failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordChangeError {
    /// The current password was not accepted.
    #[error("{0}")]
    Current(PasswordRefused),
    /// The new password is empty or longer than [`MAX_PASSWORD_BYTES`].
    #[error("the new password must have 1 to 1024 bytes")]
    Unacceptable,
    #[error("the box could not store the password")]
    Unavailable,
}

/// Change `username`'s password after checking the current one (limited as a
/// login from `ip`). Every FAST token and every signed-in browser of the
/// account is signed out, except the web session whose token hash is `keep`.
pub(crate) async fn change_password(
    core: &Core,
    ip: IpAddr,
    username: &str,
    current: &str,
    new: &str,
    keep: Option<&[u8]>,
) -> Result<(), PasswordChangeError> {
    if new.is_empty() || new.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordChangeError::Unacceptable);
    }
    verify_password(core, ip, username, current)
        .await
        .map_err(PasswordChangeError::Current)?;
    let creds = StoredCredentials::new(new, core.config.scram_iterations)
        .map_err(|_| PasswordChangeError::Unavailable)?;
    core.db
        .account_set_credentials(username, &creds, keep)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing a new password failed");
            PasswordChangeError::Unavailable
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_local_parts_on_this_domain() {
        assert_eq!(local_part("alice", "example.org").as_deref(), Some("alice"));
        assert_eq!(
            local_part(" Alice@Example.org ", "example.org").as_deref(),
            Some("alice")
        );
        assert_eq!(local_part("alice@elsewhere.example", "example.org"), None);
        assert_eq!(local_part("", "example.org"), None);
        assert_eq!(local_part(&"a".repeat(4000), "example.org"), None);
    }
}
