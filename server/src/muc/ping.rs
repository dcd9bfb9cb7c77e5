//! IQs to occupants (XEP-0045 §7.5's IQ counterpart) and MUC self-ping
//! (XEP-0410).
//!
//! A ping from an occupant's session to its own occupant JID is answered by
//! the room (`muc#self-ping-optimization`): a result when that session is in
//! the room under that nick, `<not-acceptable/>` (with `by` = the room)
//! otherwise. Any other IQ request to `room/nick` — vCard, version, pings of
//! others — goes to the occupant's newest session, from the sender's occupant
//! JID and with an id of the server's; the reply comes back to the sender
//! from `room/nick` with its own id. Unknown nick: `<item-not-found/>`;
//! sender not in the room: `<not-acceptable/>`. Forwarded requests wait in the
//! server's bounded table of outstanding IQs (`iq_out.rs`) for at most
//! [`FORWARD_TIMEOUT`], at most [`MAX_PENDING_PER_ACCOUNT`] per sender.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::{BareJid, FullJid};
use minidom::Element;

use crate::core::Core;
use crate::registry::BoxFuture;
use crate::stanza::{error_reply, iq_result, StanzaError};
use crate::xml::{attr_set, el, ns};

/// `http://jabber.org/protocol/muc#self-ping-optimization`
pub const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
const NS_PING: &str = "urn:xmpp:ping";

/// How long a forwarded IQ waits for the occupant's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Forwarded IQs one account may have waiting at once.
pub const MAX_PENDING_PER_ACCOUNT: usize = 16;

/// Forwarded IQs waiting, per sending account.
static PENDING: Mutex<Option<HashMap<BareJid, usize>>> = Mutex::new(None);

fn pending_add(bare: &BareJid, delta: isize) -> bool {
    let mut guard = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    let n = map.entry(bare.clone()).or_insert(0);
    if delta > 0 && *n >= MAX_PENDING_PER_ACCOUNT {
        return false;
    }
    *n = n.saturating_add_signed(delta);
    if *n == 0 {
        map.remove(bare);
    }
    true
}

/// The room's error to `iq` from `to`, from `room/nick`, with `by` = the
/// room (XEP-0410).
fn refuse(core: &Core, to: &FullJid, iq: &Element, room: &str, err: StanzaError) {
    if let Some(mut reply) = error_reply(iq, &err) {
        if let Some(e) = reply.get_child_mut("error", ns::CLIENT) {
            attr_set(e, "by", room);
        }
        super::send_to(core, to, reply);
    }
}

/// An IQ from `from` (a local session or a user on another server) to
/// `room/nick`.
pub async fn to_occupant(core: &Arc<Core>, from: &FullJid, node: &str, nick: &str, iq: &Element) {
    if !matches!(iq.attr("type"), Some("get" | "set")) {
        return;
    }
    let room_jid = super::room_jid(core, node)
        .map(|j| j.to_string())
        .unwrap_or_default();
    let not_joined =
        || StanzaError::new("cancel", "not-acceptable").with_text("you are not in this room");
    let Some(room) = super::existing(core, node).await else {
        refuse(core, from, iq, &room_jid, not_joined());
        return;
    };
    let mut children = iq.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        super::reply_error(core, iq, StanzaError::bad_request());
        return;
    };
    let r = room.lock().await;
    let Some(me) = r.by_session(from).filter(|_| !r.destroyed) else {
        refuse(core, from, iq, &room_jid, not_joined());
        return;
    };
    let my_nick = me.nick.clone();
    let is_ping = iq.attr("type") == Some("get") && payload.is("ping", NS_PING);
    if is_ping && nick == my_nick {
        // XEP-0410 §3.3: the room answers a self-ping itself.
        super::send_to(core, from, iq_result(iq, None, ""));
        return;
    }
    let Some(target) = r
        .by_nick(nick)
        .and_then(|o| o.primary())
        .map(|s| s.jid.clone())
    else {
        refuse(
            core,
            from,
            iq,
            &room_jid,
            StanzaError::item_not_found().with_text("nobody has that nick here"),
        );
        return;
    };
    drop(r);
    forward(core, from, iq, &room_jid, &my_nick, nick, target);
}

/// Send `iq` on to `target` from the sender's occupant JID and map the
/// answer back.
fn forward(
    core: &Arc<Core>,
    from: &FullJid,
    iq: &Element,
    room_jid: &str,
    my_nick: &str,
    nick: &str,
    target: FullJid,
) {
    let sender = from.to_bare();
    if !pending_add(&sender, 1) {
        refuse(
            core,
            from,
            iq,
            room_jid,
            StanzaError::new("wait", "resource-constraint")
                .with_text("too many questions to occupants waiting for answers"),
        );
        return;
    }
    let mut out = iq.clone();
    attr_set(&mut out, "from", format!("{room_jid}/{my_nick}"));
    attr_set(&mut out, "to", target.as_str());
    let original = iq.clone();
    let asker = from.clone();
    let answer_from = format!("{room_jid}/{nick}");
    let weak = Arc::downgrade(core);
    let then: crate::iq_out::Then =
        Box::new(move |reply: Option<Element>| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                pending_add(&sender, -1);
                let Some(core) = weak.upgrade() else { return };
                let answer = match reply {
                    Some(reply) => mapped(&reply, &original, &answer_from),
                    None => {
                        let err = StanzaError::new("wait", "recipient-unavailable")
                            .with_text("the occupant did not answer");
                        error_reply(&original, &err)
                    }
                };
                if let Some(a) = answer {
                    super::send_to(&core, &asker, a);
                }
            })
        });
    let send = |iq: Element| {
        if crate::s2s::is_remote(core, target.domain().as_str()) {
            super::send_to(core, &target, iq);
            return true;
        }
        match core.sessions.get(&target) {
            Some(s) => {
                s.send(iq);
                true
            }
            None => false,
        }
    };
    if !crate::iq_out::request_then(core, out, FORWARD_TIMEOUT, send, then) {
        pending_add(&from.to_bare(), -1);
        refuse(
            core,
            from,
            iq,
            room_jid,
            StanzaError::new("wait", "recipient-unavailable")
                .with_text("the occupant cannot be reached now"),
        );
    }
}

/// The occupant's reply as the asker gets it: from `room/nick`, with the
/// asker's id.
fn mapped(reply: &Element, original: &Element, from: &str) -> Option<Element> {
    let ty = reply.attr("type")?;
    let mut out = el("iq", ns::CLIENT)
        .attr("type", ty)
        .attr("id", original.attr("id").unwrap_or(""))
        .attr("from", from)
        .build();
    if let Some(to) = original.attr("from") {
        attr_set(&mut out, "to", to);
    }
    for c in reply.children() {
        out.append_child(c.clone());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_mapped_back_to_the_asker() {
        let original = el("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", "mine")
            .attr("from", "a@example/phone")
            .attr("to", "r@groups.example/bee")
            .build();
        let reply = el("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "kith-1234")
            .attr("from", "b@example/desk")
            .attr("to", "r@groups.example/ant")
            .child(Element::bare("query", "jabber:iq:version"))
            .build();
        let m = mapped(&reply, &original, "r@groups.example/bee").unwrap();
        assert_eq!(m.attr("id"), Some("mine"));
        assert_eq!(m.attr("from"), Some("r@groups.example/bee"));
        assert_eq!(m.attr("to"), Some("a@example/phone"));
        assert_eq!(m.attr("type"), Some("result"));
        assert!(m.has_child("query", "jabber:iq:version"));
    }

    #[test]
    fn forwarded_questions_are_bounded_per_account() {
        let a = BareJid::new("bounded@example").unwrap();
        for _ in 0..MAX_PENDING_PER_ACCOUNT {
            assert!(pending_add(&a, 1));
        }
        assert!(!pending_add(&a, 1));
        pending_add(&a, -1);
        assert!(pending_add(&a, 1));
        for _ in 0..MAX_PENDING_PER_ACCOUNT {
            pending_add(&a, -1);
        }
    }
}
