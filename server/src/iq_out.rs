//! IQs the server itself sends (push notifications to app servers, entity
//! capability queries to clients) and the matching of their replies.
//!
//! Each request gets a random id and waits for a `result` or `error` from the
//! entity it was sent to. The table is bounded ([`MAX_OUTSTANDING`]); a request
//! that finds it full fails at once instead of growing memory, and a request
//! that gets no reply within its timeout is forgotten. A reply whose `from`
//! is not the address the request went to is ignored, so nobody can answer on
//! another entity's behalf.
//!
//! Two ways to wait: [`IqOut::request`] awaits the reply, and [`request_then`]
//! registers a continuation that the router runs *inside the replying
//! session's stanza loop* ([`IqOut::resolve_in_order`]), so whatever it does
//! happens before that session's next stanza is handled (entity caps rely on
//! that order: a client's stanzas after its answer see its features).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minidom::Element;
use tokio::sync::oneshot;

use crate::core::Core;
use crate::registry::BoxFuture;
use crate::xml::attr_set;

/// Requests waiting for a reply at one time, server-wide.
pub const MAX_OUTSTANDING: usize = 4096;

/// Why a server-originated IQ got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IqOutError {
    #[error("too many requests are waiting for replies")]
    Full,
    #[error("no reply in time")]
    Timeout,
    #[error("the destination cannot be reached")]
    Unreachable,
}

/// A continuation: gets the reply, or `None` when none came in time.
pub type Then = Box<dyn FnOnce(Option<Element>) -> BoxFuture<'static, ()> + Send>;

enum Reply {
    Channel(oneshot::Sender<Element>),
    Then(Then),
}

struct Pending {
    /// The address the request went to; only it may answer.
    to: String,
    reply: Reply,
}

/// Send `iq` (with its `to` set; the `id` is set here) through `send` and run
/// `then` with the reply — in the replying session's stanza order when the
/// router hands it over — or with `None` after `timeout`. Returns false,
/// without sending, when the table is full or `send` could not deliver.
pub fn request_then(
    core: &Arc<Core>,
    mut iq: Element,
    timeout: Duration,
    send: impl FnOnce(Element) -> bool,
    then: Then,
) -> bool {
    let id = format!("kith-{}", crate::core::random_hex(8));
    attr_set(&mut iq, "id", id.clone());
    let to = iq.attr("to").unwrap_or("").to_string();
    {
        let mut p = core.iq_out.lock();
        if p.len() >= MAX_OUTSTANDING {
            return false;
        }
        p.insert(
            id.clone(),
            Pending {
                to,
                reply: Reply::Then(then),
            },
        );
    }
    if !send(iq) {
        core.iq_out.lock().remove(&id);
        return false;
    }
    // A weak reference: a pending timer must not keep a stopping server alive.
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(core) = weak.upgrade() else { return };
        let pending = core.iq_out.lock().remove(&id);
        if let Some(Pending {
            reply: Reply::Then(f),
            ..
        }) = pending
        {
            f(None).await;
        }
    });
    true
}

/// The outstanding requests, by id.
#[derive(Default)]
pub struct IqOut {
    pending: Mutex<HashMap<String, Pending>>,
}

impl IqOut {
    /// Register `iq` (its `id` is set here), hand it to `send` (which returns
    /// whether it could be delivered), and wait at most `timeout` for the
    /// reply. The reply is the whole `<iq type='result'/>` or `type='error'`.
    pub async fn request(
        &self,
        mut iq: Element,
        timeout: Duration,
        send: impl FnOnce(Element) -> bool,
    ) -> Result<Element, IqOutError> {
        let id = format!("kith-{}", crate::core::random_hex(8));
        attr_set(&mut iq, "id", id.clone());
        let to = iq.attr("to").unwrap_or("").to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.lock();
            if p.len() >= MAX_OUTSTANDING {
                return Err(IqOutError::Full);
            }
            p.insert(
                id.clone(),
                Pending {
                    to,
                    reply: Reply::Channel(tx),
                },
            );
        }
        if !send(iq) {
            self.lock().remove(&id);
            return Err(IqOutError::Unreachable);
        }
        let r = tokio::time::timeout(timeout, rx).await;
        self.lock().remove(&id);
        match r {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(IqOutError::Timeout),
        }
    }

    /// Offer an incoming `result`/`error` IQ; returns whether it answered a
    /// request of ours (and was consumed). A continuation found here runs on
    /// its own task; the router uses [`IqOut::resolve_in_order`] instead.
    pub fn resolve(&self, iq: &Element) -> bool {
        match self.take(iq) {
            Some(Reply::Channel(tx)) => {
                let _ = tx.send(iq.clone());
                true
            }
            Some(Reply::Then(f)) => {
                tokio::spawn(f(Some(iq.clone())));
                true
            }
            None => false,
        }
    }

    /// Like [`IqOut::resolve`], but a continuation runs before this returns,
    /// i.e. before the replying session's next stanza.
    pub async fn resolve_in_order(&self, iq: &Element) -> bool {
        match self.take(iq) {
            Some(Reply::Channel(tx)) => {
                let _ = tx.send(iq.clone());
                true
            }
            Some(Reply::Then(f)) => {
                f(Some(iq.clone())).await;
                true
            }
            None => false,
        }
    }

    /// Remove and return the waiter `iq` answers, if it is a reply from the
    /// address the request went to.
    fn take(&self, iq: &Element) -> Option<Reply> {
        let (Some(id), Some(from)) = (iq.attr("id"), iq.attr("from")) else {
            return None;
        };
        if !matches!(iq.attr("type"), Some("result" | "error")) {
            return None;
        }
        let mut p = self.lock();
        match p.get(id) {
            Some(pending) if same_address(&pending.to, from) => {}
            _ => return None,
        }
        p.remove(id).map(|pending| pending.reply)
    }

    /// Requests waiting now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// JIDs compared after normalisation (case of the domain and node).
fn same_address(a: &str, b: &str) -> bool {
    match (jid::Jid::new(a), jid::Jid::new(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The error condition of a stanza of type `error` (an IQ, message or
/// presence) and its type (`cancel`, `auth`, `wait`, …), if it is one.
pub fn error_of(iq: &Element) -> Option<(String, String)> {
    if iq.attr("type") != Some("error") {
        return None;
    }
    let err = iq.children().find(|c| c.name() == "error")?;
    let ty = err.attr("type").unwrap_or("cancel").to_string();
    let cond = err
        .children()
        .find(|c| c.ns() == crate::xml::ns::STANZAS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined-condition".into());
    Some((cond, ty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{el, ns};
    use std::sync::Arc;

    fn ping(to: &str) -> Element {
        el("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("to", to)
            .build()
    }

    #[tokio::test]
    async fn a_reply_from_the_addressee_resolves_the_request() {
        let out = Arc::new(IqOut::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let o = out.clone();
        let task = tokio::spawn(async move {
            o.request(ping("push.localhost"), Duration::from_secs(5), |iq| {
                tx.send(iq).is_ok()
            })
            .await
        });
        let sent = tokio::task::spawn_blocking(move || rx.recv().expect("sent"))
            .await
            .expect("join");
        let id = sent.attr("id").expect("id").to_string();
        let spoof = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", id.clone())
            .attr("from", "evil.localhost")
            .build();
        assert!(!out.resolve(&spoof), "only the addressee may answer");
        let reply = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", id)
            .attr("from", "push.localhost")
            .build();
        assert!(out.resolve(&reply));
        let got = task.await.expect("join").expect("reply");
        assert_eq!(got.attr("type"), Some("result"));
        assert_eq!(out.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_reply_times_out_and_is_forgotten() {
        let out = IqOut::default();
        let r = out
            .request(ping("a.localhost"), Duration::from_secs(30), |_| true)
            .await;
        assert_eq!(r, Err(IqOutError::Timeout));
        assert_eq!(out.len(), 0);
        let r = out
            .request(ping("a.localhost"), Duration::from_secs(30), |_| false)
            .await;
        assert_eq!(r, Err(IqOutError::Unreachable));
    }

    #[tokio::test]
    async fn a_continuation_runs_before_resolve_in_order_returns() {
        let out = IqOut::default();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ran.clone();
        let then: Then = Box::new(move |reply| {
            Box::pin(async move {
                r2.store(reply.is_some(), std::sync::atomic::Ordering::SeqCst);
            })
        });
        out.lock().insert(
            "x1".into(),
            Pending {
                to: "a@x/r".into(),
                reply: Reply::Then(then),
            },
        );
        let reply = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "x1")
            .attr("from", "a@x/r")
            .build();
        assert!(out.resolve_in_order(&reply).await);
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(out.len(), 0);
    }

    #[test]
    fn error_conditions_are_read() {
        let e = el("iq", ns::CLIENT)
            .attr("type", "error")
            .child(
                el("error", ns::CLIENT)
                    .attr("type", "cancel")
                    .child(Element::bare("item-not-found", ns::STANZAS))
                    .build(),
            )
            .build();
        assert_eq!(
            error_of(&e),
            Some(("item-not-found".into(), "cancel".into()))
        );
    }
}
