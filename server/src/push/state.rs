//! In-memory push state: the running summary per account (reset when the
//! account comes online) and the rate limit per registration — at most one
//! notification per `push.min_interval`; messages in between are summed up in
//! one later notification, so nothing is silently dropped.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::time::{Duration, Instant};

use super::summary::Summary;

/// (username, app server JID, node).
pub type RegKey = (String, String, String);

/// What to do about one registration now.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// Send now.
    Now,
    /// Send at this instant (a notification was sent recently).
    Later(Instant),
    /// A later notification is already scheduled; it will carry this message.
    Covered,
}

#[derive(Debug)]
struct Reg {
    last_sent: Instant,
    scheduled: bool,
}

/// Summaries and rate limits, shared by the server.
#[derive(Debug, Default)]
pub struct PushState {
    summaries: Mutex<HashMap<String, Summary>>,
    regs: Mutex<HashMap<RegKey, Reg>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PushState {
    /// Count one more message for `user` and return the new summary.
    pub fn record(&self, user: &str, sender: &str, body: Option<String>) -> Summary {
        let mut map = lock(&self.summaries);
        let s = map.entry(user.to_string()).or_default();
        s.count = s.count.saturating_add(1);
        s.last_sender = sender.to_string();
        s.last_body = body;
        s.clone()
    }

    /// The current summary of `user`.
    pub fn summary(&self, user: &str) -> Summary {
        lock(&self.summaries).get(user).cloned().unwrap_or_default()
    }

    /// `user` came online: start counting afresh.
    pub fn reset(&self, user: &str) {
        lock(&self.summaries).remove(user);
    }

    /// Decide when registration `key` may get its next notification.
    pub fn slot(&self, key: &RegKey, min_interval: Duration) -> Slot {
        let now = Instant::now();
        let mut regs = lock(&self.regs);
        match regs.get_mut(key) {
            None => {
                regs.insert(
                    key.clone(),
                    Reg {
                        last_sent: now,
                        scheduled: false,
                    },
                );
                Slot::Now
            }
            Some(r) if r.scheduled => Slot::Covered,
            Some(r) if now >= r.last_sent + min_interval => {
                r.last_sent = now;
                Slot::Now
            }
            Some(r) => {
                r.scheduled = true;
                Slot::Later(r.last_sent + min_interval)
            }
        }
    }

    /// The scheduled notification of `key` is going out now.
    pub fn fire(&self, key: &RegKey) {
        if let Some(r) = lock(&self.regs).get_mut(key) {
            r.scheduled = false;
            r.last_sent = Instant::now();
        }
    }

    /// The registration is gone: forget its rate-limit state.
    pub fn forget(&self, key: &RegKey) {
        lock(&self.regs).remove(key);
    }

    /// Every registration of `user` at `jid` is gone.
    pub fn forget_all(&self, user: &str, jid: &str) {
        lock(&self.regs).retain(|(u, j, _), _| u != user || j != jid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced_not_dropped() {
        let st = PushState::default();
        let k: RegKey = ("alice".into(), "push.localhost".into(), "n".into());
        let gap = Duration::from_secs(2);
        assert_eq!(st.slot(&k, gap), Slot::Now);
        let Slot::Later(at) = st.slot(&k, gap) else {
            panic!("second notification should wait");
        };
        assert_eq!(st.slot(&k, gap), Slot::Covered);
        tokio::time::sleep_until(at).await;
        st.fire(&k);
        tokio::time::sleep(gap).await;
        assert_eq!(st.slot(&k, gap), Slot::Now);
        assert_eq!(st.record("alice", "bob@localhost", None).count, 1);
        assert_eq!(st.record("alice", "bob@localhost", None).count, 2);
        st.reset("alice");
        assert_eq!(st.summary("alice").count, 0);
    }
}
