//! The in-memory cache of blocklists, backed by storage, and XEP-0191 JID
//! matching.
//!
//! An account's list is loaded from storage the first time one of its
//! stanzas is routed (every session sends something before it can be
//! available) and then kept, and updated on every change, for the life of the
//! process: the cache is bounded by the number of accounts times
//! [`MAX_ITEMS`]. Synchronous delivery paths (presence broadcast) read only
//! what is loaded.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use jid::Jid;

use crate::storage::{Db, StorageError};

/// Most JIDs one account may block.
pub const MAX_ITEMS: usize = 1000;

/// One account's blocked JIDs, normalised (`Jid::to_string`).
pub type List = Arc<BTreeSet<String>>;

/// Blocklists by username.
#[derive(Debug, Default)]
pub struct Cache {
    lists: RwLock<HashMap<String, List>>,
}

impl Cache {
    /// The list of `user` if it is loaded.
    pub fn peek(&self, user: &str) -> Option<List> {
        self.lists
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
    }

    /// The list of `user`, loading it from storage if needed.
    pub async fn get(&self, db: &Db, user: &str) -> Result<List, StorageError> {
        if let Some(l) = self.peek(user) {
            return Ok(l);
        }
        let loaded: List = Arc::new(db.blocklist(user).await?.into_iter().collect());
        let mut map = self.lists.write().unwrap_or_else(|e| e.into_inner());
        // A concurrent change may have stored a newer list meanwhile: keep it.
        Ok(map.entry(user.to_string()).or_insert(loaded).clone())
    }

    /// Replace the cached list of `user` (after storage was changed).
    pub fn set(&self, user: &str, list: BTreeSet<String>) {
        self.lists
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_string(), Arc::new(list));
    }
}

/// Whether `jid` is blocked by `list` (XEP-0191 §3.2 with XEP-0016 matching):
/// an item matches its exact full JID, a bare JID item all its resources, a
/// `domain/resource` item that resource of every user of the domain, and a
/// domain item everyone at that domain.
pub fn matches(list: &BTreeSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let domain = jid.domain().as_str();
    let mut candidates = vec![
        jid.to_string(),
        jid.to_bare().to_string(),
        domain.to_string(),
    ];
    if let Some(r) = jid.resource() {
        candidates.push(format!("{domain}/{}", r.as_str()));
    }
    candidates.iter().any(|c| list.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0191_matching() {
        let list: BTreeSet<String> = ["bob@x", "carol@x/phone", "spam.org", "x/bot"]
            .into_iter()
            .map(String::from)
            .collect();
        let j = |s: &str| Jid::new(s).expect("jid");
        assert!(matches(&list, &j("bob@x")));
        assert!(matches(&list, &j("bob@x/laptop")));
        assert!(matches(&list, &j("carol@x/phone")));
        assert!(!matches(&list, &j("carol@x/laptop")));
        assert!(!matches(&list, &j("carol@x")));
        assert!(matches(&list, &j("anyone@spam.org/r")));
        assert!(matches(&list, &j("dave@x/bot")));
        assert!(!matches(&list, &j("dave@x/phone")));
        assert!(!matches(&BTreeSet::new(), &j("bob@x")));
    }
}
