//! Stanzas sent by a connected component (already moved to `jabber:client`).
//!
//! `from` must be the component's domain or a JID at it, else the stream is
//! closed with `<invalid-from/>`; `to` is required (`<improper-addressing/>`).
//! Replies to the server's own IQs go to the outstanding-IQ table; messages to
//! local accounts go through the message module like a client's (offline
//! storage, carbons, push); presence and IQs to a full JID are forwarded to
//! that session; stanzas for another component go to it. IQ requests to the
//! server answer ping; anything else for the server or an account is refused
//! with `service-unavailable`. Remote domains need federation.

use std::sync::Arc;

use jid::Jid;
use minidom::Element;

use crate::core::Core;
use crate::registry::StanzaCtx;
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::stanza::{error_reply, iq_result, Kind, StanzaError};
use crate::stream::StreamError;
use crate::xml::ns;

const NS_PING: &str = "urn:xmpp:ping";

/// Route one stanza from the component whose connection is `handle`.
pub async fn from_component(
    core: &Arc<Core>,
    handle: &Arc<SessionHandle>,
    stanza: Element,
) -> Result<(), StreamError> {
    let Some(kind) = Kind::of(&stanza).filter(|_| stanza.ns() == ns::CLIENT) else {
        return Err(StreamError::text(
            "unsupported-stanza-type",
            format!("<{}/> is not a stanza", stanza.name()),
        ));
    };
    let own = handle.jid.domain().as_str();
    let from_ok = stanza
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .is_some_and(|f| f.domain().as_str() == own);
    if !from_ok {
        return Err(StreamError::text(
            "invalid-from",
            format!("a component may only send from {own}"),
        ));
    }
    let to = match stanza.attr("to").map(Jid::new) {
        Some(Ok(to)) => to,
        Some(Err(_)) => {
            refuse(core, &stanza, StanzaError::jid_malformed());
            return Ok(());
        }
        None => {
            return Err(StreamError::text(
                "improper-addressing",
                "stanzas from a component need a 'to'",
            ))
        }
    };
    let is_iq_reply = kind == Kind::Iq && matches!(stanza.attr("type"), Some("result" | "error"));
    if is_iq_reply && core.iq_out.resolve(&stanza) {
        return Ok(());
    }
    if to.domain().as_str() != core.domain {
        if !super::send(core, &stanza) && kind != Kind::Presence {
            // Federation (s2s) will take remote domains here.
            refuse(core, &stanza, StanzaError::remote_server_not_found());
        }
        return Ok(());
    }
    let addr = match (to.node(), to.resource()) {
        (None, _) => Addr::Host,
        (Some(_), Some(_)) => Addr::Full,
        (Some(_), None) => Addr::Bare,
    };
    match kind {
        Kind::Message if addr != Addr::Host => {
            if let Some(h) = core.registry.stanza_handler(Kind::Message, addr) {
                let cx = StanzaCtx {
                    core,
                    session: handle,
                    to: Some(&to),
                };
                h(cx, stanza).await;
            }
        }
        Kind::Message => refuse(core, &stanza, StanzaError::service_unavailable()),
        Kind::Presence => match addr {
            Addr::Full => {
                forward_full(core, &to, stanza);
            }
            Addr::Bare if matches!(stanza.attr("type"), None | Some("unavailable")) => {
                crate::deliver::to_available(core, &to.to_bare(), &stanza);
            }
            _ => {}
        },
        Kind::Iq => {
            let request = matches!(stanza.attr("type"), Some("get" | "set"));
            if addr == Addr::Full {
                let delivered = forward_full(core, &to, stanza.clone());
                if !delivered && request {
                    refuse(core, &stanza, StanzaError::service_unavailable());
                }
            } else if request {
                let ping = stanza.attr("type") == Some("get")
                    && stanza.children().count() == 1
                    && stanza.has_child("ping", NS_PING);
                if addr == Addr::Host && ping {
                    super::send(core, &iq_result(&stanza, None, &core.domain));
                } else {
                    refuse(core, &stanza, StanzaError::service_unavailable());
                }
            }
        }
    }
    Ok(())
}

/// Hand a stanza to the session bound to the full JID `to`.
fn forward_full(core: &Core, to: &Jid, stanza: Element) -> bool {
    let Some(s) = to
        .clone()
        .try_into_full()
        .ok()
        .and_then(|f| core.sessions.get(&f))
    else {
        return false;
    };
    s.send(stanza);
    true
}

/// Send the component an error reply for `stanza` (in its namespace).
fn refuse(core: &Core, stanza: &Element, err: StanzaError) {
    if let Some(reply) = error_reply(stanza, &err) {
        super::send(core, &reply);
    }
}
