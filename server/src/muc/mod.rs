//! Group chats: the XEP-0045 service on `groups.DOMAIN`, in process.
//!
//! This file owns the service's place in the server (its domain, its entry
//! in the server's disco#items, the hook that takes sessions out of rooms
//! when they end) and the dispatch of every stanza a local client sends to
//! the service, a room or an occupant. The room model is `room.rs`, its
//! settings `config.rs`, the room table `service.rs`; entering, leaving and
//! nick changes are `presence.rs`; room messages, the subject and private
//! messages `groupchat.rs`; roles and affiliations `admin.rs`; the owner's
//! form and destruction `owner.rs`; disco `disco.rs`; history on join
//! `history.rs`; occupant ids (XEP-0421) `occupant_id.rs`; invitations
//! `invite.rs`; voice requests `voice.rs`; nick registration `register.rs`;
//! IQs to occupants and self-ping `ping.rs`; room pictures `avatar.rs`; the
//! room's archive and stanza ids `archive.rs`, queries of it `mam.rs`,
//! moderation and retraction `moderate.rs`.

mod admin;
mod archive;
mod avatar;
mod config;
mod disco;
mod groupchat;
pub(crate) mod history;
mod invite;
mod mam;
mod moderate;
mod occupant_id;
mod owner;
mod ping;
mod presence;
mod register;
mod room;
mod service;
mod voice;

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::registry::{BoxFuture, IqResult, Module, Registry, SessionEvent};
use crate::session::SessionHandle;
use crate::stanza::{error_reply, iq_result, Kind, StanzaError};
use crate::xml::attr_set;

pub use service::Muc;

/// `http://jabber.org/protocol/muc`
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// `http://jabber.org/protocol/muc#user`
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
/// `http://jabber.org/protocol/muc#admin`
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// `http://jabber.org/protocol/muc#owner`
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The group chat module.
pub const MODULE: Module = Module {
    name: "muc",
    register,
};

fn register(r: &mut Registry) {
    r.migrations(&crate::storage::muc::MIGRATOR);
    r.host_items(|core| {
        if core.config.muc.enabled {
            vec![domain(core)]
        } else {
            Vec::new()
        }
    });
    r.hook(SessionEvent::Ended, session_ended);
}

/// The service's domain: `[muc] domain`, or `groups.DOMAIN`.
pub fn domain(core: &Core) -> String {
    core.config
        .muc
        .domain
        .clone()
        .unwrap_or_else(|| format!("groups.{}", core.domain))
}

/// Deliver a stanza from the service to one session: a local one, or an
/// occupant on another server through federation.
pub(crate) fn send_to(core: &Core, to: &FullJid, mut stanza: Element) {
    attr_set(&mut stanza, "to", to.as_str());
    if crate::s2s::is_remote(core, to.domain().as_str()) {
        crate::s2s::route_out_from(core, stanza);
    } else if let Some(s) = core.sessions.get(to) {
        s.send(stanza);
    }
}

/// Whether `domain` is the group chat service's.
pub fn is_service(core: &Core, domain: &str) -> bool {
    core.config.muc.enabled && domain.eq_ignore_ascii_case(&self::domain(core))
}

/// Handle a stanza a local client addressed to the service, a room or an
/// occupant; false if it is not addressed to the service. Called by the
/// router before remote routing.
pub async fn route_from_client(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    stanza: &Element,
    to: Option<&Jid>,
) -> bool {
    let Some(to) = to else { return false };
    if !is_service(core, to.domain().as_str()) {
        return false;
    }
    route(core, &session.jid, stanza, to).await;
    true
}

/// Handle a stanza from `from` (a local session, or a user on another
/// server) to the service, a room or an occupant (`to`, in the service's
/// domain). Answers go back through [`send_to`].
pub async fn route(core: &Arc<Core>, from: &FullJid, stanza: &Element, to: &Jid) {
    let kind = Kind::of(stanza);
    // Errors and results from clients: an answer to a forwarded IQ, or a
    // client bouncing a room message; nothing to do for the room itself.
    let ty = stanza.attr("type").unwrap_or("");
    if ty == "error" || (kind == Some(Kind::Iq) && ty == "result") {
        if kind == Some(Kind::Iq) {
            // An occupant answering an IQ the room forwarded (ping.rs).
            core.iq_out.resolve_in_order(stanza).await;
        } else if crate::s2s::is_remote(core, from.domain().as_str()) && session_gone(stanza) {
            // Another server saying its user's session is gone: the user
            // leaves the room instead of lingering as a ghost (XEP-0045
            // status 333). Link failures (remote-server-*) may pass, and a
            // local client's own error changes nothing.
            if let Some(n) = to.node() {
                if let Some(room) = existing(core, n.as_str()).await {
                    presence::unreachable(core, &room, from).await;
                }
            }
        }
        return;
    }
    let Some(node) = to.node().map(|n| n.as_str().to_string()) else {
        service_stanza(core, from, stanza, kind).await;
        return;
    };
    let nick = to.resource().map(|r| r.as_str().to_string());
    match (kind, nick) {
        (Some(Kind::Presence), Some(nick)) => {
            presence::handle(core, from, &node, &nick, stanza).await
        }
        (Some(Kind::Presence), None) => {
            // A presence to the bare room JID has no nick (§7.2.1).
            if stanza.attr("type").is_none() {
                reply_error(core, stanza, StanzaError::new("modify", "jid-malformed"));
            }
        }
        // Invitations, declines and voice requests (invite.rs, voice.rs).
        (Some(Kind::Message), None) if stanza.attr("type") != Some("groupchat") => {
            if voice::is_request(stanza) {
                voice::handle(core, from, &node, stanza).await
            } else {
                invite::handle(core, from, &node, stanza).await
            }
        }
        (Some(Kind::Message), None) => groupchat::to_room(core, from, &node, stanza).await,
        (Some(Kind::Message), Some(nick)) => {
            groupchat::private(core, from, &node, &nick, stanza).await
        }
        (Some(Kind::Iq), None) => room_iq(core, from, &node, stanza).await,
        (Some(Kind::Iq), Some(nick)) => ping::to_occupant(core, from, &node, &nick, stanza).await,
        (None, _) => {}
    }
}

/// Whether an error from another server says the addressed session no
/// longer exists.
fn session_gone(stanza: &Element) -> bool {
    const GONE: &[&str] = &[
        "recipient-unavailable",
        "service-unavailable",
        "item-not-found",
        "gone",
    ];
    crate::iq_out::error_of(stanza).is_some_and(|(condition, _)| GONE.contains(&&*condition))
}

/// Answer an IQ request with a result or an error.
fn answer(core: &Core, from: &FullJid, iq: &Element, result: IqResult) {
    match result {
        Ok(payload) => send_to(core, from, iq_result(iq, payload, "")),
        Err(e) => reply_error(core, iq, e),
    }
}

/// An IQ request to a room.
async fn room_iq(core: &Arc<Core>, from: &FullJid, node: &str, iq: &Element) {
    let set = iq.attr("type") == Some("set");
    let mut children = iq.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        reply_error(core, iq, StanzaError::bad_request());
        return;
    };
    let Some(room) = existing(core, node).await else {
        reply_error(core, iq, StanzaError::item_not_found());
        return;
    };
    let result = match (set, payload.ns().as_str(), payload.name()) {
        (false, NS_DISCO_INFO, "query")
            if payload.attr("node") == Some(register::NODE_ROOMUSER) =>
        {
            register::reserved_nick(&room, from).await
        }
        (false, NS_DISCO_INFO, "query") => disco::room_info(core, &room, from, payload).await,
        (false, NS_DISCO_ITEMS, "query") => Ok(Some(Element::bare("query", NS_DISCO_ITEMS))),
        (_, NS_ADMIN, "query") => admin::handle(core, &room, from, set, payload).await,
        (_, NS_OWNER, "query") => owner::handle(core, &room, from, set, payload).await,
        (_, register::NS_REGISTER, "query") => {
            register::handle(core, &room, from, set, payload).await
        }
        (_, avatar::NS_VCARD, "vCard") => avatar::handle(core, &room, from, set, payload).await,
        (_, crate::mam::NS, _) => mam::handle(core, &room, from, set, payload).await,
        (true, _, _) if moderate::is_request(payload) => {
            moderate::iq(core, &room, from, payload).await
        }
        _ => Err(StanzaError::service_unavailable()),
    };
    answer(core, from, iq, result);
}

/// A stanza to the service itself.
async fn service_stanza(core: &Arc<Core>, from: &FullJid, stanza: &Element, kind: Option<Kind>) {
    match kind {
        Some(Kind::Iq) => {
            let get = stanza.attr("type") == Some("get");
            let mut children = stanza.children();
            let answer = match (children.next(), children.next()) {
                (Some(p), None) if get && p.is("query", NS_DISCO_INFO) => {
                    disco::service_info(core, p)
                }
                (Some(p), None) if get && p.is("query", NS_DISCO_ITEMS) => {
                    disco::service_items(core, from, p).await
                }
                (Some(_), None) => Err(StanzaError::service_unavailable()),
                _ => Err(StanzaError::bad_request()),
            };
            self::answer(core, from, stanza, answer);
        }
        Some(Kind::Message) => reply_error(core, stanza, StanzaError::service_unavailable()),
        _ => {}
    }
}

/// The room `name` if it exists (a storage failure is logged and reads as
/// "no such room").
pub(crate) async fn existing(core: &Core, name: &str) -> Option<service::RoomRef> {
    match core.muc.get(core, name).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not load group chats");
            None
        }
    }
}

/// Send `stanza`'s sender an error from the address it was sent to.
pub(crate) fn reply_error(core: &Core, stanza: &Element, err: StanzaError) {
    if let Some(reply) = error_reply(stanza, &err) {
        if let Some(to) = reply.attr("to").and_then(|t| FullJid::new(t).ok()) {
            send_to(core, &to, reply);
        }
    }
}

/// A session ended: it leaves every room it was in.
fn session_ended<'a>(core: &'a Arc<Core>, session: &'a Arc<SessionHandle>) -> BoxFuture<'a, ()> {
    Box::pin(leave_all(core, &session.jid, None))
}

/// `jid` leaves every room it is in (its session ended, or it sent a
/// broadcast unavailable presence).
pub async fn leave_all(core: &Arc<Core>, jid: &FullJid, status: Option<String>) {
    for name in core.muc.take_joined(jid) {
        if let Some(room) = existing(core, &name).await {
            presence::leave(core, &room, jid, status.clone()).await;
        }
    }
}

/// The bare JID of room `name`.
pub(crate) fn room_jid(core: &Core, name: &str) -> Option<BareJid> {
    BareJid::new(&format!("{name}@{}", domain(core))).ok()
}
