//! The live-update channel's hub: an account's open pages subscribe (one
//! event stream per tab, `GET /events`), and whatever changes the account's
//! state publishes an event that each stream turns into HTML for its page.
//! Later pages (chat, admin) add their events here.
//!
//! Bounded: at most [`STREAMS_PER_ACCOUNT`] streams per account and
//! [`STREAMS`] in all; a stream that falls behind gets one "changed" instead
//! of every event it missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// Open event streams one account may hold (tabs and browsers together).
pub const STREAMS_PER_ACCOUNT: usize = 32;
/// Open event streams in all.
pub const STREAMS: usize = 1024;
/// Events queued per account before a slow stream skips ahead.
const QUEUE: usize = 16;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEvent {
    /// A browser of the account signed in or out, or its password changed.
    SessionsChanged,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, (broadcast::Sender<LiveEvent>, usize)>,
    total: usize,
}

/// The hub.
#[derive(Default, Clone)]
pub struct Live {
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    /// Tell `account`'s open streams that `event` happened.
    pub fn publish(&self, account: &str, event: LiveEvent) {
        if let Some((tx, _)) = lock(&self.inner).accounts.get(account) {
            let _ = tx.send(event);
        }
    }

    /// A new stream for `account`, or `None` over the limits.
    pub fn subscribe(&self, account: &str) -> Option<Subscription> {
        let mut inner = lock(&self.inner);
        if inner.total >= STREAMS {
            return None;
        }
        let entry = inner
            .accounts
            .entry(account.to_string())
            .or_insert_with(|| (broadcast::channel(QUEUE).0, 0));
        if entry.1 >= STREAMS_PER_ACCOUNT {
            return None;
        }
        entry.1 += 1;
        let rx = entry.0.subscribe();
        inner.total += 1;
        Some(Subscription {
            live: self.clone(),
            account: account.to_string(),
            rx,
        })
    }
}

/// One open stream's place in the hub; leaves it on drop.
pub struct Subscription {
    live: Live,
    account: String,
    rx: broadcast::Receiver<LiveEvent>,
}

impl Subscription {
    /// The next event (`None` when the hub is gone). A stream that fell
    /// behind gets one `SessionsChanged`: it re-renders from the database.
    pub async fn recv(&mut self) -> Option<LiveEvent> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(LiveEvent::SessionsChanged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = lock(&self.live.inner);
        inner.total = inner.total.saturating_sub(1);
        if let Some(e) = inner.accounts.get_mut(&self.account) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                inner.accounts.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_are_bounded_per_account_and_get_events() {
        let live = Live::default();
        let mut subs: Vec<_> = (0..STREAMS_PER_ACCOUNT)
            .map(|_| live.subscribe("alice").expect("under the limit"))
            .collect();
        assert!(live.subscribe("alice").is_none());
        assert!(live.subscribe("bob").is_some());
        live.publish("alice", LiveEvent::SessionsChanged);
        assert_eq!(subs[0].recv().await, Some(LiveEvent::SessionsChanged));
        subs.pop();
        assert!(live.subscribe("alice").is_some());
        drop(subs);
        assert!(lock(&live.inner).accounts.is_empty());
    }
}
