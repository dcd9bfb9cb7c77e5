//! The shared handle of one bound client session: its address, its outbound
//! queue, and the presence state other sessions need to see.
//!
//! The connection task owns the socket; everyone else reaches the session only
//! through this handle. The queue is bounded: a session that does not drain it
//! (a client that stopped reading) is told to close instead of growing memory.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use jid::FullJid;
use minidom::Element;
use tokio::sync::Notify;

/// Stanzas held back for an inactive session before they are sent anyway.
const MAX_HELD: usize = 100;

/// Why another part of the server asked a session to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A newer session bound the same resource (RFC 6120 §7.7.2.2).
    Conflict,
    /// The outbound queue overflowed.
    TooSlow,
    /// XEP-0198: a new connection resumes this session; the old connection
    /// (half-open, probably) is dropped and the session handed over.
    Resumed,
}

/// Presence-related state of a session (RFC 6121 §4).
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent available presence and has not gone unavailable.
    pub available: bool,
    /// Has sent initial presence at least once.
    pub initial_sent: bool,
    pub priority: i8,
    /// Last broadcast presence (for probes and new resources), kept
    /// serialised: a parsed element costs several times more memory.
    last: Option<Box<str>>,
    /// Requested the roster, so receives roster pushes.
    pub interested: bool,
    /// Full/bare JIDs that got directed presence and must get unavailable.
    pub directed: HashSet<String>,
}

impl PresenceState {
    /// Remember (or forget) the last broadcast presence.
    pub fn set_last(&mut self, presence: Option<&Element>) {
        self.last = presence.map(|p| {
            let mut buf = Vec::new();
            crate::xml::serialize(p, &mut buf);
            String::from_utf8_lossy(&buf).into()
        });
    }

    /// The last broadcast presence.
    pub fn last(&self) -> Option<Element> {
        self.last.as_deref()?.parse().ok()
    }
}

/// A bound session, shared by the router.
#[derive(Debug)]
pub struct SessionHandle {
    pub jid: FullJid,
    /// Unique per connection (distinguishes a replaced session with the same JID).
    pub id: u64,
    /// Serialised stanzas waiting to be written (serialising at enqueue time
    /// makes the queue's byte size exact, so it can be bounded).
    queue: Mutex<VecDeque<Vec<u8>>>,
    ready: Notify,
    closed: AtomicBool,
    /// XEP-0280: this session asked for copies of its account's chats.
    pub carbons: AtomicBool,
    /// XEP-0198: the connection dropped and the session waits to be resumed;
    /// messages for it go to durable offline storage (see `message.rs`).
    pub detached: AtomicBool,
    /// XEP-0352: the client said it is inactive; `hold` decides what may wait.
    inactive: AtomicBool,
    hold: Option<fn(&Element) -> bool>,
    held: Mutex<Vec<Vec<u8>>>,
    max_items: usize,
    /// Bytes waiting in the queue, and the most allowed.
    queued: AtomicUsize,
    max_queued: usize,
    kick: Mutex<Option<Kick>>,
    kicked: Notify,
    state: Mutex<PresenceState>,
    /// Applied to every stanza before it is queued: a component's stream
    /// speaks `jabber:component:accept`, not `jabber:client` (XEP-0114).
    rewrite: std::sync::OnceLock<fn(&Element) -> Element>,
    /// The highest archive id this session's own stanzas produced: stream
    /// management waits for it to be durable before acknowledging them.
    archived: std::sync::atomic::AtomicI64,
}

impl SessionHandle {
    pub fn new(
        jid: FullJid,
        id: u64,
        max_items: usize,
        max_queued: usize,
        hold: Option<fn(&Element) -> bool>,
    ) -> Self {
        SessionHandle {
            jid,
            id,
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            carbons: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            inactive: AtomicBool::new(false),
            hold,
            held: Mutex::new(Vec::new()),
            max_items,
            queued: AtomicUsize::new(0),
            max_queued,
            kick: Mutex::new(None),
            kicked: Notify::new(),
            state: Mutex::new(PresenceState::default()),
            rewrite: std::sync::OnceLock::new(),
            archived: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// A stanza of this session was archived under `id` (see `mam`).
    pub fn note_archived(&self, id: i64) {
        self.archived
            .fetch_max(id, std::sync::atomic::Ordering::AcqRel);
    }

    /// The highest archive id this session's stanzas produced (0: none).
    pub fn archived(&self) -> i64 {
        self.archived.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Rewrite every stanza queued from now on with `f` (set once).
    pub fn set_rewrite(&self, f: fn(&Element) -> Element) {
        let _ = self.rewrite.set(f);
    }

    /// Queue a stanza. If the queue is full (in stanzas or in bytes) the
    /// session is kicked as too slow and the stanza is not queued.
    pub fn send(&self, stanza: Element) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut bytes = Vec::with_capacity(256);
        match self.rewrite.get() {
            Some(rewrite) => crate::xml::serialize(&rewrite(&stanza), &mut bytes),
            None => crate::xml::serialize(&stanza, &mut bytes),
        }
        if self.inactive.load(Ordering::Relaxed) {
            if self.hold.is_some_and(|may_wait| may_wait(&stanza)) {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if held.len() < MAX_HELD {
                    held.push(bytes);
                    return;
                }
            }
            // Something that must go out now: what waited goes first, in order.
            self.flush_held();
        }
        self.enqueue(bytes);
    }

    /// Mark the session inactive (XEP-0352) or active; becoming active
    /// releases what was held.
    pub fn set_inactive(&self, inactive: bool) {
        self.inactive.store(inactive, Ordering::Relaxed);
        if !inactive {
            self.flush_held();
        }
    }

    /// Whether the client said it is inactive (XEP-0352); push notifies
    /// the phone behind such a session.
    pub fn is_inactive(&self) -> bool {
        self.inactive.load(Ordering::Relaxed)
    }

    fn flush_held(&self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        for bytes in held {
            self.enqueue(bytes);
        }
    }

    fn enqueue(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.max_items || self.queued.load(Ordering::Relaxed) + len > self.max_queued
        {
            drop(q);
            tracing::warn!(jid = %self.jid, "outbound queue full; closing the session");
            self.kick(Kick::TooSlow);
            return;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        q.push_back(bytes);
        drop(q);
        self.ready.notify_one();
    }

    /// Resolves when stanzas may be waiting (a stored permit makes a
    /// notification sent before the wait count).
    pub async fn queued(&self) {
        self.ready.notified().await
    }

    /// Take everything queued, joined into one buffer (empty if nothing).
    pub fn take_queued(&self) -> Vec<u8> {
        let items = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let total: usize = items.iter().map(Vec::len).sum();
        self.queued.fetch_sub(total, Ordering::Relaxed);
        let mut items = items.into_iter();
        let Some(mut out) = items.next() else {
            return Vec::new();
        };
        out.reserve(total - out.len());
        for item in items {
            out.extend_from_slice(&item);
        }
        out
    }

    /// Take everything queued, one serialised stanza per item (stream
    /// management counts and keeps each one).
    pub fn take_queued_items(&self) -> VecDeque<Vec<u8>> {
        let items = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let total: usize = items.iter().map(Vec::len).sum();
        self.queued.fetch_sub(total, Ordering::Relaxed);
        items
    }

    /// Forget a kick that was handled (a resumed session lives on).
    pub fn clear_kick(&self) {
        *self.kick.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forget a [`Kick::Resumed`] only: a `<resume/>` asked to drop a
    /// connection that is gone already (the session is being parked).
    pub fn clear_resume_kick(&self) {
        let mut k = self.kick.lock().unwrap_or_else(|e| e.into_inner());
        if *k == Some(Kick::Resumed) {
            *k = None;
        }
    }

    /// The session ended: drop what is queued and refuse more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.take_queued();
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
            let kick = *self.kick.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = kick {
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
