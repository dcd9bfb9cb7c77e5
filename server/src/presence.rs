//! Presence (RFC 6121 §4): broadcast to subscribers and own resources, probes
//! on initial presence, directed presence, and unavailable presence when a
//! session ends. Subscription stanzas are handed to the roster module.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::deliver::{self, available};
use crate::registry::{BoxFuture, Module, Registry, SessionEvent, StanzaCtx};
use crate::roster::{self, state::SubType};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::Kind;
use crate::xml::{attr_set, el, ns};

/// Directed-presence recipients remembered per session (for their unavailable).
const MAX_DIRECTED: usize = 1000;

/// The presence module.
pub const MODULE: Module = Module {
    name: "presence",
    register,
};

fn register(r: &mut Registry) {
    r.stanza(Kind::Presence, Addr::SelfBare, to_self);
    r.stanza(Kind::Presence, Addr::Bare, to_bare);
    r.stanza(Kind::Presence, Addr::Full, to_full);
    r.stanza(Kind::Presence, Addr::Host, |_, _| Box::pin(async {}));
    r.hook(SessionEvent::Ended, ended);
}

fn with_to(p: &Element, to: &str) -> Element {
    let mut c = p.clone();
    attr_set(&mut c, "to", to);
    c
}

fn to_self<'a>(cx: StanzaCtx<'a>, p: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if cx.to.is_none() {
            match p.attr("type") {
                None => available_presence(cx.core, cx.session, p).await,
                Some("unavailable") => {
                    // The rooms it is in hear it leave (XEP-0045 §7.14).
                    let status = p.get_child("status", ns::CLIENT).map(|s| s.text());
                    crate::muc::leave_all(cx.core, &cx.session.jid, status).await;
                    unavailable_presence(cx.core, cx.session, Some(p)).await
                }
                _ => {}
            }
        } else if matches!(p.attr("type"), None | Some("unavailable")) {
            // Directed to the user's own bare JID: the other resources see it.
            let me = cx.session.jid.to_bare();
            for s in available(cx.core, &me) {
                if s.id != cx.session.id {
                    s.send(with_to(&p, me.as_str()));
                }
            }
        }
    })
}

fn to_bare<'a>(cx: StanzaCtx<'a>, p: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let Some(to) = cx.to.map(Jid::to_bare) else {
            return;
        };
        handle_addressed(cx.core, cx.session, &to, None, p).await;
    })
}

fn to_full<'a>(cx: StanzaCtx<'a>, p: Element) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let Some(to) = cx.to else { return };
        handle_addressed(cx.core, cx.session, &to.to_bare(), Some(to), p).await;
    })
}

/// Presence with a `to` other than the user's own bare JID.
async fn handle_addressed(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    bare: &BareJid,
    full: Option<&Jid>,
    mut p: Element,
) {
    let ty = p.attr("type").map(str::to_string);
    if let Some(t) = ty.as_deref().and_then(SubType::parse) {
        // Subscription stanzas are always from and to bare JIDs (RFC 6121 §3.1.2).
        roster::subscription(core, session, t, bare, Some(&p)).await;
        return;
    }
    match ty.as_deref() {
        Some("probe") if crate::s2s::is_remote(core, bare.domain().as_str()) => {
            attr_set(&mut p, "from", session.jid.to_bare().as_str());
            crate::s2s::route_out(core, p);
        }
        Some("probe") => {
            for reply in probe(core, bare, &session.jid.to_bare()).await {
                session.send(with_to(&reply, session.jid.as_str()));
            }
        }
        None | Some("unavailable") => {
            let to_text = full
                .map(|f| f.to_string())
                .unwrap_or_else(|| bare.to_string());
            attr_set(&mut p, "to", to_text.clone());
            match full.and_then(|f| f.clone().try_into_full().ok()) {
                Some(f) if crate::s2s::is_remote(core, f.domain().as_str()) => {
                    crate::s2s::route_out(core, p.clone());
                }
                Some(f) => {
                    if let Some(s) = core.sessions.get(&f) {
                        s.send(p.clone());
                    }
                }
                None => {
                    deliver::to_available(core, bare, &p);
                }
            }
            let mut st = session.state();
            if ty.is_none() {
                // Bounded: a client cannot make the server remember without end.
                if st.directed.len() < MAX_DIRECTED {
                    st.directed.insert(to_text);
                }
            } else {
                st.directed.remove(&to_text);
            }
        }
        Some("error") => {
            deliver::to_available(core, bare, &p);
        }
        _ => {}
    }
}

/// Answer a probe of `target` by `requester`: the target's available presences,
/// if the requester is subscribed to them.
pub(crate) async fn probe(core: &Arc<Core>, target: &BareJid, requester: &BareJid) -> Vec<Element> {
    // XEP-0191: no presence between accounts that blocked one another.
    if crate::blocking::enforce::blocked_between(core, &Jid::from(requester.clone()), target) {
        return Vec::new();
    }
    let subscribed = roster::items(core, target)
        .await
        .iter()
        .any(|i| i.contact == requester.as_str() && i.subscription.has_from());
    if !subscribed {
        return Vec::new();
    }
    available(core, target)
        .iter()
        .filter_map(|s| s.state().last())
        .collect()
}

/// Available presence broadcast (RFC 6121 §4.2, §4.4).
async fn available_presence(core: &Arc<Core>, session: &Arc<SessionHandle>, p: Element) {
    // Modules may add to the presence first (the XEP-0153 avatar hash).
    let mut p = p;
    for f in core.registry.presence_filters() {
        f(core, session, &mut p).await;
    }
    let priority = p
        .get_child("priority", ns::CLIENT)
        .and_then(|e| e.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    let initial = {
        let mut st = session.state();
        let initial = !st.available;
        st.available = true;
        st.initial_sent = true;
        st.priority = priority;
        st.set_last(Some(&p));
        initial
    };
    let me = session.jid.to_bare();
    let items = roster::items(core, &me).await;
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        if let Ok(contact) = BareJid::new(&item.contact) {
            deliver::to_available(core, &contact, &with_to(&p, contact.as_str()));
        }
    }
    let others: Vec<_> = available(core, &me)
        .into_iter()
        .filter(|s| s.id != session.id)
        .collect();
    for s in &others {
        s.send(with_to(&p, me.as_str()));
    }
    for h in core.registry.presence_hooks() {
        h(core, session, &p).await;
    }
    if !initial {
        return;
    }
    // Probes: the presence of every contact the user is subscribed to.
    for item in items.iter().filter(|i| i.subscription.has_to()) {
        if let Ok(contact) = BareJid::new(&item.contact) {
            if crate::s2s::is_remote(core, contact.domain().as_str()) {
                // The contact's server answers the probe (federation).
                crate::s2s::route_out(
                    core,
                    el("presence", ns::CLIENT)
                        .attr("from", me.as_str())
                        .attr("to", contact.as_str())
                        .attr("type", "probe")
                        .build(),
                );
                continue;
            }
            for reply in probe(core, &contact, &me).await {
                session.send(with_to(&reply, session.jid.as_str()));
            }
        }
    }
    for s in &others {
        let last = s.state().last();
        if let Some(last) = last {
            session.send(with_to(&last, session.jid.as_str()));
        }
    }
    for req in roster::pending_requests(core, &me).await {
        session.send(req);
    }
    core.session_event(SessionEvent::InitialPresence, session)
        .await;
}

/// Unavailable presence broadcast (RFC 6121 §4.5), explicit or on session end.
async fn unavailable_presence(core: &Arc<Core>, session: &Arc<SessionHandle>, p: Option<Element>) {
    let directed = {
        let mut st = session.state();
        if !st.available && st.directed.is_empty() {
            return;
        }
        st.available = false;
        st.set_last(None);
        std::mem::take(&mut st.directed)
    };
    let p = p.unwrap_or_else(|| {
        el("presence", ns::CLIENT)
            .attr("from", session.jid.as_str())
            .attr("type", "unavailable")
            .build()
    });
    let me = session.jid.to_bare();
    let items = roster::items(core, &me).await;
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        if let Ok(contact) = BareJid::new(&item.contact) {
            deliver::to_available(core, &contact, &with_to(&p, contact.as_str()));
        }
    }
    for s in available(core, &me) {
        if s.id != session.id {
            s.send(with_to(&p, me.as_str()));
        }
    }
    for target in directed {
        if let Ok(j) = Jid::new(&target) {
            let copy = with_to(&p, j.as_str());
            match j.clone().try_into_full() {
                Ok(f) if crate::s2s::is_remote(core, f.domain().as_str()) => {
                    crate::s2s::route_out(core, copy);
                }
                Ok(f) => {
                    if let Some(s) = core.sessions.get(&f) {
                        s.send(copy);
                    }
                }
                Err(b) => {
                    deliver::to_available(core, &b, &copy);
                }
            }
        }
    }
}

fn ended<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        // Replaced by a newer login with the same resource that is already
        // online: an unavailable from this JID now would contradict it.
        let replaced = core
            .sessions
            .get(&session.jid)
            .is_some_and(|s| s.state().available);
        if replaced {
            session.state().available = false;
            return;
        }
        unavailable_presence(core, session, None).await
    })
}

/// After a subscription change, send `owner`'s current presence to `contact`
/// (available presences if `available`, else unavailable).
pub fn send_current_presence(core: &Core, owner: &BareJid, contact: &BareJid, available_now: bool) {
    let sessions = available(core, owner);
    if !available_now || sessions.is_empty() {
        let from = sessions
            .first()
            .map(|s| s.jid.to_string())
            .unwrap_or_else(|| owner.to_string());
        let p = el("presence", ns::CLIENT)
            .attr("from", from)
            .attr("to", contact.as_str())
            .attr("type", "unavailable")
            .build();
        deliver::to_available(core, contact, &p);
        return;
    }
    for s in sessions {
        // Not `if let … = s.state().last()`: the guard would stay held while
        // the contact's sessions are locked, and two sessions doing this
        // towards each other deadlock.
        let last = s.state().last();
        if let Some(last) = last {
            deliver::to_available(core, contact, &with_to(&last, contact.as_str()));
        }
    }
}
