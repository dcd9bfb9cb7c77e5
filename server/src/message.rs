//! Message delivery (RFC 6121 §8.5) for local accounts, with offline storage
//! (XEP-0160) when no resource can take a message.

use std::sync::atomic::Ordering;
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

fn to_bare<'a>(cx: StanzaCtx<'a>, mut msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let bare = target_bare(cx.to, cx.session);
        if !filters(cx.core, cx.session, &bare, &mut msg).await {
            return;
        }
        let delivered = deliver_bare(cx.core, cx.session, &bare, &msg).await;
        after(cx.core, cx.session, &msg, &delivered);
        after_shared(cx.core, &msg, &delivered);
    })
}

/// Let other modules (blocking, archiving) vet or rewrite a message before
/// it is delivered; `false` means it was stopped (the sender was answered).
pub(crate) async fn filters(
    core: &Arc<Core>,
    sender: &Arc<SessionHandle>,
    recipient: &BareJid,
    msg: &mut Element,
) -> bool {
    for f in core.registry.message_filters() {
        if !f(core, sender, recipient, msg).await {
            return false;
        }
    }
    true
}

/// Let other modules (carbons) see a handled message.
fn after(core: &Core, sender: &SessionHandle, msg: &Element, delivered: &[Arc<SessionHandle>]) {
    for h in core.registry.message_hooks() {
        h(core, sender, msg, delivered);
    }
}

/// Let modules that work in the background (push) see a handled message.
fn after_shared(core: &Arc<Core>, msg: &Element, delivered: &[Arc<SessionHandle>]) {
    for h in core.registry.shared_message_hooks() {
        h(core, msg, delivered);
    }
}

/// The available, non-negative-priority sessions with the highest priority.
fn top_priority(sessions: &[Arc<SessionHandle>]) -> Vec<Arc<SessionHandle>> {
    let eligible: Vec<(i8, &Arc<SessionHandle>)> = sessions
        .iter()
        .filter_map(|s| s.eligible().map(|p| (p, s)))
        .collect();
    let Some(top) = eligible.iter().map(|(p, _)| *p).max() else {
        return Vec::new();
    };
    eligible
        .into_iter()
        .filter(|(p, _)| *p == top)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Deliver to `targets` (sessions of one account). A session waiting to be
/// resumed (XEP-0198, `detached`) gets the message through the offline store
/// instead, so it is durable before the sender's ack; it is handed over on
/// resume. Stored once however many of the targets are detached.
async fn send_all(
    core: &Arc<Core>,
    sender: &SessionHandle,
    targets: &[Arc<SessionHandle>],
    msg: &Element,
) {
    let Some(first) = targets.iter().find(|s| s.detached.load(Ordering::Relaxed)) else {
        for s in targets {
            s.send(msg.clone());
        }
        return;
    };
    let user = crate::deliver::username(&first.jid.to_bare()).to_string();
    let _guard = offline_lock(&user).lock().await;
    send_all_locked(core, sender, &user, targets, msg).await;
}

/// [`send_all`] with the account's offline lock held.
async fn send_all_locked(
    core: &Arc<Core>,
    sender: &SessionHandle,
    user: &str,
    targets: &[Arc<SessionHandle>],
    msg: &Element,
) {
    let mut store = false;
    for s in targets {
        if s.detached.load(Ordering::Relaxed) {
            store = true;
        } else {
            s.send(msg.clone());
        }
    }
    if store && offline_worthy(msg) {
        store_offline(core, sender, user, msg.clone()).await;
    }
}

fn to_full<'a>(cx: StanzaCtx<'a>, mut msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let Some(full) = cx.to.and_then(|j| j.clone().try_into_full().ok()) else {
            return;
        };
        if !filters(cx.core, cx.session, &full.to_bare(), &mut msg).await {
            return;
        }
        let delivered = match cx.core.sessions.get(&full) {
            Some(target) => {
                let target = vec![target];
                send_all(cx.core, cx.session, &target, &msg).await;
                target
            }
            None => match msg_type(&msg) {
                "chat" | "normal" => deliver_bare(cx.core, cx.session, &full.to_bare(), &msg).await,
                "groupchat" => {
                    bounce(cx.session, &msg, StanzaError::service_unavailable());
                    Vec::new()
                }
                _ => Vec::new(),
            },
        };
        after(cx.core, cx.session, &msg, &delivered);
        after_shared(cx.core, &msg, &delivered);
    })
}

fn to_host<'a>(cx: StanzaCtx<'a>, msg: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move { bounce(cx.session, &msg, StanzaError::service_unavailable()) })
}

/// RFC 6121 §8.5.2: a message to a local bare JID. Returns the sessions it
/// was delivered to live.
async fn deliver_bare(
    core: &Arc<Core>,
    sender: &SessionHandle,
    bare: &BareJid,
    msg: &Element,
) -> Vec<Arc<SessionHandle>> {
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
            bounce(sender, msg, StanzaError::service_unavailable());
            return Vec::new();
        }
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            bounce(sender, msg, StanzaError::internal());
            return Vec::new();
        }
    }
    match msg_type(msg) {
        "groupchat" => {
            bounce(sender, msg, StanzaError::service_unavailable());
            Vec::new()
        }
        "headline" => {
            let all: Vec<_> = sessions
                .iter()
                .filter(|s| s.eligible().is_some())
                .cloned()
                .collect();
            send_all(core, sender, &all, msg).await;
            all
        }
        "error" => {
            let top = top_priority(&sessions);
            let first: Vec<_> = top.into_iter().take(1).collect();
            send_all(core, sender, &first, msg).await;
            first
        }
        _ => {
            let top = top_priority(&sessions);
            if top.is_empty() {
                return store_or_deliver(core, sender, bare, &user, msg).await;
            }
            send_all(core, sender, &top, msg).await;
            top
        }
    }
}

/// Serialises "store for later" with "flush on initial presence" per account:
/// a message racing the recipient's initial presence is either stored before
/// the flush reads storage, or sees the now-available session and goes live.
static OFFLINE_LOCKS: [tokio::sync::Mutex<()>; 64] =
    [const { tokio::sync::Mutex::const_new(()) }; 64];

pub(crate) fn offline_lock(user: &str) -> &'static tokio::sync::Mutex<()> {
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
    msg: &Element,
) -> Vec<Arc<SessionHandle>> {
    let _guard = offline_lock(user).lock().await;
    let top = top_priority(&core.sessions.of(bare));
    if top.is_empty() {
        store_offline(core, sender, user, msg.clone()).await;
    } else {
        send_all_locked(core, sender, user, &top, msg).await;
    }
    top
}

/// Whether a message goes to the offline store when it cannot be delivered
/// (RFC 6121 §8.5.2, XEP-0160): chat or normal, and more than a chat state.
pub(crate) fn offline_worthy(msg: &Element) -> bool {
    msg.name() == "message" && matches!(msg_type(msg), "chat" | "normal") && storable(msg)
}

/// Whether a message is worth keeping for later (not a bare chat state).
fn storable(msg: &Element) -> bool {
    msg.children().any(|c| c.ns() != NS_CHATSTATES)
}

async fn store_offline(core: &Arc<Core>, sender: &SessionHandle, user: &str, msg: Element) {
    if let Err(e) = keep_offline(core, user, &msg).await {
        bounce(sender, &msg, e);
    }
}

/// XEP-0160: stamp `msg` with a `<delay/>` and keep it for `user`, whoever
/// sent it (a local session or another server). The caller holds the
/// account's [`offline_lock`] and bounces the error it gets back.
pub(crate) async fn keep_offline(
    core: &Arc<Core>,
    user: &str,
    msg: &Element,
) -> Result<(), StanzaError> {
    if !storable(msg) {
        return Ok(());
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
        .offline_push(user, &text, core.limits().offline_max)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err(StanzaError::service_unavailable()
                .with_text("the recipient's offline storage is full"))
        }
        Err(e) => {
            tracing::error!(error = %e, "storing an offline message failed");
            Err(StanzaError::internal())
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
        flush_locked(core, session, &user).await;
    })
}

/// XEP-0198: the session's connection dropped (or its stream management
/// ends); from now on messages for it go to the offline store. The returned
/// guard holds the account's offline lock: messages arriving meanwhile are
/// stored only after what the caller stores while holding it (order kept).
pub(crate) async fn detach(session: &SessionHandle) -> tokio::sync::MutexGuard<'static, ()> {
    let user = crate::deliver::username(&session.jid.to_bare()).to_string();
    let guard = offline_lock(&user).lock().await;
    session.detached.store(true, Ordering::Relaxed);
    guard
}

/// XEP-0198: the session was resumed. Forget the parked copies of what the
/// new connection resent from memory (`rows`), take messages live again, and
/// hand over what was stored while it was away.
pub(crate) async fn reattach(core: &Arc<Core>, session: &Arc<SessionHandle>, rows: &[i64]) {
    let user = crate::deliver::username(&session.jid.to_bare()).to_string();
    let _guard = offline_lock(&user).lock().await;
    if let Err(e) = core.db.sm_unpark(&user, rows).await {
        tracing::error!(error = %e, "forgetting parked messages failed");
    }
    session.detached.store(false, Ordering::Relaxed);
    flush_locked(core, session, &user).await;
}

/// Send `user`'s stored messages to `session` and forget them (offline lock held).
async fn flush_locked(core: &Arc<Core>, session: &Arc<SessionHandle>, user: &str) {
    let stored = match core.db.offline_peek(user).await {
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
    if let Err(e) = core.db.offline_delete_upto(user, last).await {
        tracing::error!(error = %e, "deleting delivered offline messages failed");
    }
}
