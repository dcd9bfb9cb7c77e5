//! IQs the server itself sends to a client (disco#info for entity caps, and
//! later pings or push checks), and the matching of their replies.
//!
//! Each request gets a fresh id and a slot in a bounded table; the reply (a
//! `result` or `error` from exactly the addressed full JID) fills the slot.
//! A request that gets no reply within its timeout, or that finds the table
//! full ([`MAX_OUTSTANDING`]), fails without blocking anything else.
//!
//! Two ways to wait: [`IqTracker::request`] awaits the reply, and
//! [`request_then`] runs a continuation *inside the replying session's
//! stanza loop*, so whatever the continuation does happens before the
//! session's next stanza is handled (entity caps rely on that order).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use tokio::sync::oneshot;

use crate::core::Core;
use crate::registry::BoxFuture;
use crate::session::SessionHandle;
use crate::xml::attr_set;

/// Server-originated IQs waiting for a reply, across all sessions.
pub const MAX_OUTSTANDING: usize = 1000;

/// Why a server-originated IQ got no usable answer.
#[allow(dead_code)] // for modules that await a reply (server pings, push); tested below
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IqOutError {
    #[error("too many outstanding requests")]
    Full,
    #[error("no reply in time")]
    Timeout,
    #[error("the session went away")]
    Gone,
}

/// A continuation: gets the reply, or `None` when none came in time.
pub type Then = Box<dyn FnOnce(Option<Element>) -> BoxFuture<'static, ()> + Send>;

enum Waiter {
    #[allow(dead_code)] // built by `request`
    Channel(oneshot::Sender<Element>),
    Then(Then),
}

/// The table of outstanding server-originated IQs.
#[derive(Default)]
pub struct IqTracker {
    waiting: Mutex<HashMap<String, (String, Waiter)>>,
}

impl std::fmt::Debug for IqTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IqTracker").finish_non_exhaustive()
    }
}

/// Send `iq` to `session` and run `then` with its reply (in the session's
/// stanza loop) or with `None` after `timeout`. Returns false, without
/// sending, when the table is full.
pub fn request_then(
    core: &Arc<Core>,
    session: &SessionHandle,
    iq: Element,
    timeout: Duration,
    then: Then,
) -> bool {
    let Some(id) = core.iq_out.add(session, iq, Waiter::Then(then)) else {
        return false;
    };
    // A weak reference: a pending timer must not keep a stopping server alive.
    let core = Arc::downgrade(core);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(core) = core.upgrade() else { return };
        let waiter = core.iq_out.take(&id);
        if let Some(Waiter::Then(f)) = waiter {
            f(None).await;
        }
    });
    true
}

impl IqTracker {
    /// Register a waiter and send; `None` when the table is full.
    fn add(&self, session: &SessionHandle, mut iq: Element, waiter: Waiter) -> Option<String> {
        let id = format!("kith-{}", crate::core::random_hex(8));
        let to = session.jid.to_string();
        {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if w.len() >= MAX_OUTSTANDING {
                return None;
            }
            w.insert(id.clone(), (to.clone(), waiter));
        }
        attr_set(&mut iq, "id", id.clone());
        attr_set(&mut iq, "to", to);
        session.send(iq);
        Some(id)
    }

    fn take(&self, id: &str) -> Option<Waiter> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .map(|(_, w)| w)
    }

    /// Send `iq` (type get or set, payload filled in; `id`, `to` are set here)
    /// to `session` and wait at most `timeout` for its `result` or `error`.
    #[allow(dead_code)] // for modules that await a reply (server pings, push); tested below
    pub async fn request(
        &self,
        session: &SessionHandle,
        iq: Element,
        timeout: Duration,
    ) -> Result<Element, IqOutError> {
        let (tx, rx) = oneshot::channel();
        let id = self
            .add(session, iq, Waiter::Channel(tx))
            .ok_or(IqOutError::Full)?;
        let out = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(IqOutError::Gone),
            Err(_) => Err(IqOutError::Timeout),
        };
        self.take(&id);
        out
    }

    /// Offer a `result`/`error` IQ from a client (its `from` already stamped
    /// by the router). Returns true when it answered one of our requests; a
    /// continuation runs before this returns.
    pub async fn resolve(&self, iq: &Element) -> bool {
        let (Some(id), Some(from)) = (iq.attr("id"), iq.attr("from")) else {
            return false;
        };
        let waiter = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            // Only the addressed resource may answer (no spoofed replies).
            if w.get(id).is_none_or(|(to, _)| to != from) {
                return false;
            }
            w.remove(id).map(|(_, w)| w)
        };
        match waiter {
            Some(Waiter::Channel(tx)) => tx.send(iq.clone()).is_ok(),
            Some(Waiter::Then(f)) => {
                f(Some(iq.clone())).await;
                true
            }
            None => false,
        }
    }

    /// Requests currently waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{el, ns};

    fn session() -> SessionHandle {
        let jid = jid::FullJid::new("a@x/r").expect("jid");
        SessionHandle::new(jid, 1, 100, 1 << 20, None)
    }

    #[tokio::test]
    async fn a_reply_from_the_addressed_jid_resolves_the_request() {
        let t = std::sync::Arc::new(IqTracker::default());
        let s = std::sync::Arc::new(session());
        let (t2, s2) = (t.clone(), s.clone());
        let req = tokio::spawn(async move {
            let iq = el("iq", ns::CLIENT).attr("type", "get").build();
            t2.request(&s2, iq, Duration::from_secs(5)).await
        });
        let sent = loop {
            let q = s.take_queued();
            if !q.is_empty() {
                break String::from_utf8(q).expect("utf8");
            }
            tokio::task::yield_now().await;
        };
        let sent: Element = sent.parse().expect("one element");
        let id = sent.attr("id").expect("id").to_string();
        assert_eq!(sent.attr("to"), Some("a@x/r"));
        let spoofed = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", id.clone())
            .attr("from", "b@x/r")
            .build();
        assert!(
            !t.resolve(&spoofed).await,
            "a reply from another JID is ignored"
        );
        let reply = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", id)
            .attr("from", "a@x/r")
            .build();
        assert!(t.resolve(&reply).await);
        assert_eq!(req.await.expect("join"), Ok(reply));
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_times_out_and_frees_its_slot() {
        let t = IqTracker::default();
        let s = session();
        let iq = el("iq", ns::CLIENT).attr("type", "get").build();
        let r = t.request(&s, iq, Duration::from_secs(3)).await;
        assert_eq!(r, Err(IqOutError::Timeout));
        assert_eq!(t.len(), 0);
    }
}
