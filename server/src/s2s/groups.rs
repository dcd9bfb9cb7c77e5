//! Federation and the group chat service (`groups.DOMAIN`): people on other
//! servers join Kith's rooms. What their servers send to the service's
//! domain is handed to the service ([`crate::muc::route`]); the rooms'
//! answers leave through [`super::route_out`] on links whose local domain is
//! the service's (see `Pair` in `mod.rs`). This file also keeps stanzas for
//! the service that reach federation code from inside Kith (a bounce for a
//! room, an internal route) away from the network.

use std::sync::Arc;

use jid::Jid;
use minidom::Element;

use crate::core::Core;
use crate::stanza::{error_reply, Kind, StanzaError};

/// A stanza from another server to the service, a room or an occupant.
///
/// XEP-0045 talks with users' full JIDs (occupants are sessions). A stanza
/// from a bare JID (a server, or a subscription request) is answered with
/// `bad-request` when it expects an answer (IQ get/set, a message) and
/// otherwise dropped: errors, results and presences from bare JIDs carry
/// nothing a room acts on.
pub async fn handle(core: &Arc<Core>, stanza: Element, from: Jid, to: Jid) {
    match from.try_into_full() {
        Ok(full) => crate::muc::route(core, &full, &stanza, &to).await,
        Err(_) => {
            let ty = stanza.attr("type").unwrap_or("");
            let answer = match Kind::of(&stanza) {
                Some(Kind::Iq) => matches!(ty, "get" | "set"),
                Some(Kind::Message) => ty != "error",
                _ => false,
            };
            if answer {
                let err = StanzaError::bad_request()
                    .with_text("group chats answer users (user@domain/resource) only");
                if let Some(reply) = error_reply(&stanza, &err) {
                    super::route_out(core, reply);
                }
            }
        }
    }
}

/// A stanza for the service that reached federation code from inside Kith
/// (a failed delivery bounced back to a room, or a local entity's stanza on
/// the remote path): handed to the service, never sent out. Needs the
/// federation state (it holds the server for spawned work); without it the
/// stanza is dropped, as there is nobody remote it could concern.
pub fn local(core: &Core, stanza: Element) {
    let from = stanza.attr("from").and_then(|f| Jid::new(f).ok());
    let to = stanza.attr("to").and_then(|t| Jid::new(t).ok());
    let (Some(from), Some(to)) = (from, to) else {
        return;
    };
    let Ok(from) = from.try_into_full() else {
        return;
    };
    let Some(core) = core.s2s.get().and_then(|s| s.core.upgrade()) else {
        return;
    };
    tokio::spawn(async move {
        crate::muc::route(&core, &from, &stanza, &to).await;
    });
}
