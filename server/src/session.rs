//! The shared handle of one bound client session: its address, its outbound
//! queue, and the presence state other sessions need to see.
//!
//! The connection task owns the socket; everyone else reaches the session only
//! through this handle. The queue is bounded: a session that does not drain it
//! (a client that stopped reading) is told to close instead of growing memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use jid::FullJid;
use minidom::Element;
use tokio::sync::{mpsc, Notify};

/// A serialised stanza for the connection task to write. Serialising at
/// enqueue time makes the queue's byte size exact, so it can be bounded.
#[derive(Debug)]
pub struct Outbound(pub Vec<u8>);

/// Why another part of the server asked a session to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A newer session bound the same resource (RFC 6120 §7.7.2.2).
    Conflict,
    /// The outbound queue overflowed.
    TooSlow,
}

/// Presence-related state of a session (RFC 6121 §4).
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent available presence and has not gone unavailable.
    pub available: bool,
    /// Has sent initial presence at least once.
    pub initial_sent: bool,
    pub priority: i8,
    /// Last broadcast presence (for probes and new resources).
    pub last: Option<Element>,
    /// Requested the roster, so receives roster pushes.
    pub interested: bool,
    /// Full/bare JIDs that got directed presence and must get unavailable.
    pub directed: HashSet<String>,
}

/// A bound session, shared by the router.
#[derive(Debug)]
pub struct SessionHandle {
    pub jid: FullJid,
    /// Unique per connection (distinguishes a replaced session with the same JID).
    pub id: u64,
    tx: mpsc::Sender<Outbound>,
    /// Bytes waiting in the queue, and the most allowed.
    queued: AtomicUsize,
    max_queued: usize,
    kick: Mutex<Option<Kick>>,
    kicked: Notify,
    state: Mutex<PresenceState>,
}

impl SessionHandle {
    pub fn new(jid: FullJid, id: u64, tx: mpsc::Sender<Outbound>, max_queued: usize) -> Self {
        SessionHandle {
            jid,
            id,
            tx,
            queued: AtomicUsize::new(0),
            max_queued,
            kick: Mutex::new(None),
            kicked: Notify::new(),
            state: Mutex::new(PresenceState::default()),
        }
    }

    /// Queue a stanza. If the queue is full (in stanzas or in bytes) the
    /// session is kicked as too slow and the stanza is not queued.
    pub fn send(&self, stanza: Element) {
        let mut bytes = Vec::with_capacity(256);
        crate::xml::serialize(&stanza, &mut bytes);
        let len = bytes.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_queued {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            tracing::warn!(jid = %self.jid, "outbound queue over its byte limit; closing the session");
            self.kick(Kick::TooSlow);
            return;
        }
        match self.tx.try_send(Outbound(bytes)) {
            Ok(()) => {}
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if let mpsc::error::TrySendError::Full(_) = e {
                    tracing::warn!(jid = %self.jid, "outbound queue full; closing the session");
                    self.kick(Kick::TooSlow);
                }
            }
        }
    }

    /// The connection task took `len` bytes off the queue.
    pub fn dequeued(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Ask the session's connection task to close the stream.
    pub fn kick(&self, why: Kick) {
        let mut k = self.kick.lock().unwrap_or_else(|e| e.into_inner());
        if k.is_none() {
            *k = Some(why);
        }
        drop(k);
        self.kicked.notify_one();
    }

    /// Resolves when the session was kicked, with the reason.
    pub async fn kicked(&self) -> Kick {
        loop {
            if let Some(k) = *self.kick.lock().unwrap_or_else(|e| e.into_inner()) {
                return k;
            }
            self.kicked.notified().await;
        }
    }

    /// The presence state (short critical sections only; never held across await).
    pub fn state(&self) -> MutexGuard<'_, PresenceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Available with a non-negative priority: eligible for bare-JID messages.
    pub fn eligible(&self) -> Option<i8> {
        let s = self.state();
        (s.available && s.priority >= 0).then_some(s.priority)
    }
}
