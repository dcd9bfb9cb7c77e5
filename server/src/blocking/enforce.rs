//! Where blocking takes effect (XEP-0191 §3.3, §3.4): stanzas a client sends
//! to a JID it blocked, and stanzas from a blocked JID to the account that
//! blocked it. Runs in the router before any handler (so before archiving and
//! offline storage) and in the presence broadcast.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;

use crate::core::Core;
use crate::deliver::username;
use crate::router::bounce;
use crate::session::SessionHandle;
use crate::stanza::{error_reply, Kind, StanzaError};
use crate::xml::{attr_set, el, ns};

use super::list::matches;

const NS_ERRORS: &str = "urn:xmpp:blocking:errors";

/// Whether the stanza `session` sends to `to` (local or remote) may go on. If
/// not, the sender was answered: `<not-acceptable/>` with `<blocked/>` when the
/// sender blocked `to`; `<service-unavailable/>` when a local `to` blocked the
/// sender (which must not learn that it is blocked). Presence is dropped
/// silently. A remote `to` has no blocklist here: only the sender's own applies.
pub async fn allow(
    core: &Arc<Core>,
    session: &Arc<SessionHandle>,
    kind: Kind,
    stanza: &Element,
    to: &Jid,
) -> bool {
    let me = session.jid.to_bare();
    let to_bare = to.to_bare();
    if to_bare == me || to.node().is_none() {
        return true;
    }
    let lists = &core.blocklists;
    let mine = match lists.get(&core.db, username(&me)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "loading a blocklist failed");
            return true;
        }
    };
    if matches(&mine, to) {
        if kind != Kind::Presence {
            if let Some(mut reply) = error_reply(
                stanza,
                &StanzaError::new("cancel", "not-acceptable")
                    .with_text("you blocked this contact; unblock them first"),
            ) {
                if let Some(e) = reply.get_child_mut("error", ns::CLIENT) {
                    e.append_child(el("blocked", NS_ERRORS).build());
                }
                if reply.attr("from").is_none() {
                    attr_set(&mut reply, "from", core.domain.as_str());
                }
                session.send(reply);
            }
        }
        return false;
    }
    if to_bare.domain().as_str() != core.domain {
        return true;
    }
    let theirs = match lists.get(&core.db, username(&to_bare)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "loading a blocklist failed");
            return true;
        }
    };
    if matches(&theirs, &Jid::from(session.jid.clone())) {
        if kind != Kind::Presence {
            bounce(session, stanza, StanzaError::service_unavailable());
        }
        return false;
    }
    true
}

/// For synchronous delivery paths: whether `from` and the local account `to`
/// blocked one another (as far as the loaded lists say).
pub fn blocked_between(core: &Core, from: &Jid, to: &BareJid) -> bool {
    let lists = &core.blocklists;
    // Only a local account has a blocklist here; a remote `to` with the same
    // user name as a local account must not borrow that account's list.
    let by_recipient = to.domain().as_str() == core.domain
        && lists.peek(username(to)).is_some_and(|l| matches(&l, from));
    let by_sender = from.node().is_some()
        && from.domain().as_str() == core.domain
        && lists
            .peek(username(&from.to_bare()))
            .is_some_and(|l| matches(&l, &Jid::from(to.clone())));
    by_recipient || by_sender
}

/// Same as [`blocked_between`], for a stanza's `from` attribute.
pub fn stanza_blocked(core: &Core, stanza: &Element, to: &BareJid) -> bool {
    match stanza.attr("from").map(Jid::new) {
        Some(Ok(from)) => blocked_between(core, &from, to),
        _ => false,
    }
}
