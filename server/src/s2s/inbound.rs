//! Stanzas from remote servers, delivered to local accounts and sessions
//! (RFC 6121 §8 for messages, §3–§4 for presence), and IQs answered by the
//! modules that registered for them. The stream has already checked that the
//! `from` domain is one it authenticated and that `to` is this server.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::registry::IqCtx;
use crate::roster::state::SubType;
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::{bare_error_reply, iq_result, Kind, StanzaError};
use crate::xml::attr_set;

/// Deliver a stanza (in `jabber:client`) addressed to a local JID: a full JID
/// goes to that session, a bare JID to the account's available sessions.
pub fn deliver_local(core: &Core, stanza: Element) {
    let Some(to) = stanza.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    match to.try_into_full() {
        Ok(full) => {
            if let Some(s) = core.sessions.get(&full) {
                s.send(stanza);
            }
        }
        Err(bare) => {
            crate::deliver::to_available(core, &bare, &stanza);
        }
    }
}

/// Send an error for a remote stanza back to its sender, without the
/// stanza's payload (up to 512 KiB that would wait in the link's queue).
pub(super) fn refuse(core: &Arc<Core>, stanza: &Element, err: StanzaError) {
    if let Some(reply) = bare_error_reply(stanza, &err) {
        super::route_out(core, reply);
    }
}

/// Hand a stanza from a remote server to what serves its `to`: the group
/// chat service for the service's domain (`groups.rs`), local accounts and
/// the server itself otherwise.
pub async fn dispatch(core: &Arc<Core>, stanza: Element, from: Jid, to: Jid) {
    if crate::muc::is_service(core, to.domain().as_str()) {
        super::groups::handle(core, stanza, from, to).await;
    } else {
        handle(core, stanza, from, to).await;
    }
}

/// Handle one stanza from a remote server.
pub async fn handle(core: &Arc<Core>, stanza: Element, from: Jid, to: Jid) {
    match Kind::of(&stanza) {
        Some(Kind::Message) => message(core, stanza, &from, &to).await,
        Some(Kind::Presence) => presence(core, stanza, &from, &to).await,
        Some(Kind::Iq) => iq(core, stanza, from, to).await,
        None => {}
    }
}

fn top_priority(core: &Core, bare: &BareJid) -> Vec<Arc<SessionHandle>> {
    let eligible: Vec<(i8, Arc<SessionHandle>)> = core
        .sessions
        .of(bare)
        .into_iter()
        .filter_map(|s| s.eligible().map(|p| (p, s)))
        .collect();
    let Some(top) = eligible.iter().map(|(p, _)| *p).max() else {
        return Vec::new();
    };
    eligible
        .into_iter()
        .filter(|(p, _)| *p == top)
        .map(|(_, s)| s)
        .collect()
}

/// A stand-in session for a remote sender, for code that needs one (module
/// handlers and message hooks); it is never registered and receives nothing.
fn stand_in(core: &Core, from: &Jid) -> Option<Arc<SessionHandle>> {
    let jid = match from.clone().try_into_full() {
        Ok(f) => f,
        Err(b) => FullJid::new(&format!("{b}/s2s")).ok()?,
    };
    Some(Arc::new(SessionHandle::new(
        jid,
        core.next_id(),
        0,
        0,
        None,
    )))
}

/// Let the message hooks (carbons, archives) see a message from a remote
/// sender that was delivered live to `delivered`.
fn after(core: &Core, from: &Jid, msg: &Element, delivered: &[Arc<SessionHandle>]) {
    if let Some(sender) = stand_in(core, from) {
        for h in core.registry.message_hooks() {
            h(core, &sender, msg, delivered);
        }
    }
}

async fn message(core: &Arc<Core>, mut msg: Element, from: &Jid, to: &Jid) {
    let ty = msg.attr("type").unwrap_or("normal").to_string();
    if to.node().is_none() {
        if ty != "error" {
            refuse(core, &msg, StanzaError::service_unavailable());
        }
        return;
    }
    // The message module's filters (blocking, the recipient's archive) see
    // it first, as for a message between local accounts.
    let Some(sender) = stand_in(core, from) else {
        return;
    };
    if !crate::message::filters(core, &sender, &to.to_bare(), &mut msg).await {
        return;
    }
    if let Ok(full) = to.clone().try_into_full() {
        if let Some(s) = core.sessions.get(&full) {
            s.send(msg.clone());
            after(core, from, &msg, &[s]);
            return;
        }
        if !matches!(ty.as_str(), "chat" | "normal") {
            if ty == "groupchat" {
                refuse(core, &msg, StanzaError::service_unavailable());
            }
            return;
        }
    }
    let bare = to.to_bare();
    let user = crate::deliver::username(&bare).to_string();
    match core.db.account_exists(&user).await {
        Ok(true) => {}
        Ok(false) => {
            refuse(core, &msg, StanzaError::service_unavailable());
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            refuse(core, &msg, StanzaError::internal());
            return;
        }
    }
    match ty.as_str() {
        "groupchat" => refuse(core, &msg, StanzaError::service_unavailable()),
        "headline" => {
            for s in core.sessions.of(&bare) {
                if s.eligible().is_some() {
                    s.send(msg.clone());
                }
            }
        }
        "error" => {
            if let Some(s) = top_priority(core, &bare).first() {
                s.send(msg);
            }
        }
        _ => {
            // Serialised with local senders and the flush at login, so a message
            // racing the initial presence is never stranded in storage.
            let _guard = crate::message::offline_lock(&user).lock().await;
            let top = top_priority(core, &bare);
            if top.is_empty() {
                store_offline(core, &user, msg.clone()).await;
            } else {
                for s in &top {
                    s.send(msg.clone());
                }
            }
            after(core, from, &msg, &top);
        }
    }
}

/// XEP-0160: keep a message for an account with no available session (the
/// message module's store, under the same per-account lock as local senders).
async fn store_offline(core: &Arc<Core>, user: &str, msg: Element) {
    if let Err(e) = crate::message::keep_offline(core, user, &msg).await {
        refuse(core, &msg, e);
    }
}

async fn presence(core: &Arc<Core>, p: Element, from: &Jid, to: &Jid) {
    if to.node().is_none() {
        return;
    }
    let ty = p.attr("type").map(str::to_string);
    let bare = to.to_bare();
    if let Some(t) = ty.as_deref().and_then(SubType::parse) {
        let exists = core
            .db
            .account_exists(crate::deliver::username(&bare))
            .await
            .unwrap_or(false);
        if exists {
            crate::roster::deliver_inbound(core, &from.to_bare(), &bare, t, Some(&p)).await;
        }
        return;
    }
    match ty.as_deref() {
        Some("probe") => {
            for mut reply in crate::presence::probe(core, &bare, &from.to_bare()).await {
                attr_set(&mut reply, "to", from.as_str());
                super::route_out(core, reply);
            }
        }
        None | Some("unavailable") | Some("error") => {
            // PEP: the contact's resources and capabilities (pubsub/remote.rs).
            if ty.as_deref() != Some("error") {
                crate::pubsub::remote::presence(core, &p, from, &bare).await;
            }
            match to.clone().try_into_full() {
                Ok(full) => {
                    if let Some(s) = core.sessions.get(&full) {
                        s.send(p);
                    }
                }
                Err(b) => {
                    crate::deliver::to_available(core, &b, &p);
                }
            }
        }
        _ => {}
    }
}

async fn iq(core: &Arc<Core>, iq: Element, from: Jid, to: Jid) {
    let ty = iq.attr("type").unwrap_or("").to_string();
    let is_request = matches!(ty.as_str(), "get" | "set");
    if let Ok(full) = to.clone().try_into_full() {
        match core.sessions.get(&full) {
            Some(s) => s.send(iq),
            None if is_request => refuse(core, &iq, StanzaError::service_unavailable()),
            None => {}
        }
        return;
    }
    if !is_request {
        // A reply to an IQ the server sent (iq_out.rs: capability queries).
        core.iq_out.resolve(&iq);
        return;
    }
    let payloads: Vec<&Element> = iq.children().collect();
    let [payload] = payloads[..] else {
        refuse(
            core,
            &iq,
            StanzaError::bad_request().with_text("iq get/set needs exactly one child"),
        );
        return;
    };
    let addr = if to.node().is_none() {
        Addr::Host
    } else {
        Addr::Bare
    };
    let handler = core
        .registry
        .iq_handler(ty == "set", addr, &payload.ns(), payload.name());
    let Some(handler) = handler else {
        refuse(core, &iq, StanzaError::service_unavailable());
        return;
    };
    if addr == Addr::Bare {
        let exists = core
            .db
            .account_exists(crate::deliver::username(&to.to_bare()))
            .await
            .unwrap_or(false);
        if !exists {
            refuse(core, &iq, StanzaError::service_unavailable());
            return;
        }
    }
    // Handlers see the requester as a session: a remote one gets a stand-in.
    let Some(requester) = stand_in(core, &from) else {
        return;
    };
    let cx = IqCtx {
        core,
        session: &requester,
        to: Some(&to),
        addr,
        payload,
    };
    match handler(cx).await {
        Ok(payload) => super::route_out(core, iq_result(&iq, payload, to.as_str())),
        Err(e) => refuse(core, &iq, e),
    }
}
