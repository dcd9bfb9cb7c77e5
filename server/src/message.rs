//! Message delivery (RFC 6121 §8.5) for local accounts, with offline storage
//! (XEP-0160) when no resource can take a message.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::registry::{BoxFuture, FeatureScope, Module, Registry, SessionEvent, StanzaCtx};
use crate::router::{bounce, Addr};
use crate::session::SessionHandle;
use crate::stanza::{Kind, StanzaError};
use crate::xml::{el, serialize};

/// The message module.
pub const MODULE: Module = Module {
    name: "message",
    register,
};

const NS_DELAY: &str = "urn:xmpp:delay";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

fn register(r: &mut Registry) {
    r.stanza(Kind::Message, Addr::Bare, to_bare);
    r.stanza(Kind::Message, Addr::SelfBare, to_bare);
    r.stanza(Kind::Message, Addr::Full, to_full);
    r.stanza(Kind::Message, Addr::Host, to_host);
    r.feature(FeatureScope::Host, "msgoffline");
    r.migrations(&crate::storage::offline::MIGRATOR);
    r.hook(SessionEvent::InitialPresence, deliver_offline);
}

fn msg_type(m: &Element) -> &str {
    m.attr("type").unwrap_or("normal")
}

fn target_bare(to: Option<&Jid>, session: &SessionHandle) -> BareJid {
    to.map(|j| j.to_bare())
        .unwrap_or_else(|| session.jid.to_bare())
}

fn to_bare<'a>(cx: StanzaCtx<'a>, msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let bare = target_bare(cx.to, cx.session);
        deliver_bare(cx.core, cx.session, &bare, msg).await;
    })
}

fn to_full<'a>(cx: StanzaCtx<'a>, msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let Some(full) = cx.to.and_then(|j| j.clone().try_into_full().ok()) else {
            return;
        };
        if let Some(target) = cx.core.sessions.get(&full) {
            target.send(msg);
            return;
        }
        match msg_type(&msg) {
            "chat" | "normal" => deliver_bare(cx.core, cx.session, &full.to_bare(), msg).await,
            "groupchat" => bounce(cx.session, &msg, StanzaError::service_unavailable()),
            _ => {}
        }
    })
}

fn to_host<'a>(cx: StanzaCtx<'a>, msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move { bounce(cx.session, &msg, StanzaError::service_unavailable()) })
}

/// RFC 6121 §8.5.2: a message to a local bare JID.
async fn deliver_bare(core: &Arc<Core>, sender: &SessionHandle, bare: &BareJid, msg: Element) {
    let ty = msg_type(&msg).to_string();
    let user = crate::deliver::username(bare).to_string();
    let sessions = core.sessions.of(bare);
    // A bound session proves the account exists; only ask storage otherwise.
    let exists = if sessions.is_empty() {
        core.db.account_exists(&user).await
    } else {
        Ok(true)
    };
    match exists {
        Ok(true) => {}
        Ok(false) => {
            bounce(sender, &msg, StanzaError::service_unavailable());
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            bounce(sender, &msg, StanzaError::internal());
            return;
        }
    }
    let eligible: Vec<(i8, &Arc<SessionHandle>)> = sessions
        .iter()
        .filter_map(|s| s.eligible().map(|p| (p, s)))
        .collect();
    let top = eligible.iter().map(|(p, _)| *p).max();
    match ty.as_str() {
        "groupchat" => bounce(sender, &msg, StanzaError::service_unavailable()),
        "headline" => {
            for (_, s) in &eligible {
                s.send(msg.clone());
            }
        }
        "error" => {
            if let Some((_, s)) = eligible.iter().find(|(p, _)| Some(*p) == top) {
                s.send(msg);
            }
        }
        _ => match top {
            Some(top) => {
                for (_, s) in eligible.iter().filter(|(p, _)| *p == top) {
                    s.send(msg.clone());
                }
            }
            None => store_or_deliver(core, sender, bare, &user, msg).await,
        },
    }
}

/// Serialises "store for later" with "flush on initial presence" per account:
/// a message racing the recipient's initial presence is either stored before
/// the flush reads storage, or sees the now-available session and goes live.
static OFFLINE_LOCKS: [tokio::sync::Mutex<()>; 64] =
    [const { tokio::sync::Mutex::const_new(()) }; 64];

fn offline_lock(user: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    &OFFLINE_LOCKS[(h.finish() % 64) as usize]
}

async fn store_or_deliver(
    core: &Arc<Core>,
    sender: &SessionHandle,
    bare: &BareJid,
    user: &str,
    msg: Element,
) {
    let _guard = offline_lock(user).lock().await;
    let sessions = core.sessions.of(bare);
    let eligible: Vec<(i8, &Arc<SessionHandle>)> = sessions
        .iter()
        .filter_map(|s| s.eligible().map(|p| (p, s)))
        .collect();
    if let Some(top) = eligible.iter().map(|(p, _)| *p).max() {
        for (_, s) in eligible.iter().filter(|(p, _)| *p == top) {
            s.send(msg.clone());
        }
        return;
    }
    store_offline(core, sender, user, msg).await;
}

/// Whether a message is worth keeping for later (not a bare chat state).
fn storable(msg: &Element) -> bool {
    msg.children().any(|c| c.ns() != NS_CHATSTATES)
}

async fn store_offline(core: &Arc<Core>, sender: &SessionHandle, user: &str, msg: Element) {
    if !storable(&msg) {
        return;
    }
    let mut stamped = msg.clone();
    stamped.append_child(
        el("delay", NS_DELAY)
            .attr("from", core.domain.clone())
            .attr("stamp", crate::xep::time::now_rfc3339())
            .text("Offline storage")
            .build(),
    );
    let mut buf = Vec::new();
    serialize(&stamped, &mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    match core
        .db
        .offline_push(user, &text, core.config.limits.offline_max)
        .await
    {
        Ok(true) => {}
        Ok(false) => bounce(
            sender,
            &msg,
            StanzaError::service_unavailable().with_text("the recipient's offline storage is full"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "storing an offline message failed");
            bounce(sender, &msg, StanzaError::internal());
        }
    }
}

/// XEP-0160: on initial presence with non-negative priority, hand over what was stored.
fn deliver_offline<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if session.eligible().is_none() {
            return;
        }
        let user = crate::deliver::username(&session.jid.to_bare()).to_string();
        let _guard = offline_lock(&user).lock().await;
        let stored = match core.db.offline_peek(&user).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading offline messages failed");
                return;
            }
        };
        let Some(last) = stored.last().map(|s| s.0) else {
            return;
        };
        for (_, text, _) in &stored {
            match text.parse::<Element>() {
                Ok(msg) => session.send(msg),
                Err(e) => tracing::error!(error = %e, "a stored offline message does not parse"),
            }
        }
        if let Err(e) = core.db.offline_delete_upto(&user, last).await {
            tracing::error!(error = %e, "deleting delivered offline messages failed");
        }
    })
}
