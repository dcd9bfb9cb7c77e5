//! Voice requests (XEP-0045 §7.13, §8.6): a visitor in a moderated room
//! asks for voice with the `muc#request` data form; the room sends every
//! moderator an approval form naming the visitor; a moderator who submits it
//! with `muc#request_allow` true makes the visitor a participant (presence
//! to everyone). An occupant has one request pending at a time; another one
//! within [`REQUEST_INTERVAL`] gets `<resource-constraint/>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jid::FullJid;
use minidom::Element;

use super::presence::broadcast;
use super::room::{Role, Room};
use super::{reply_error, send_to, NS_USER};
use crate::core::Core;
use crate::stanza::StanzaError;
use crate::xml::form::{self, field, form_type_field, option, NS_DATA};
use crate::xml::{el, ns};

/// `http://jabber.org/protocol/muc#request`
pub const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";

/// How long a request stays pending (a new one is refused meanwhile).
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(60);

/// Whether a message to the room carries a `muc#request` form.
pub fn is_request(stanza: &Element) -> bool {
    request_form(stanza).is_some()
}

fn request_form(stanza: &Element) -> Option<&Element> {
    stanza
        .children()
        .find(|c| c.is("x", NS_DATA) && form::form_type(c).as_deref() == Some(NS_REQUEST))
}

/// A `muc#request` form sent to the room: a visitor's request or a
/// moderator's answer.
pub async fn handle(core: &Arc<Core>, from: &FullJid, node: &str, stanza: &Element) {
    let Some(room) = super::existing(core, node).await else {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    };
    let Some(x) = request_form(stanza) else {
        return;
    };
    let mut r = room.lock().await;
    if r.destroyed {
        reply_error(core, stanza, StanzaError::item_not_found());
        return;
    }
    let Some(me) = r.by_session(from) else {
        reply_error(
            core,
            stanza,
            StanzaError::new("modify", "not-acceptable")
                .with_text("only occupants may ask for voice"),
        );
        return;
    };
    let (nick, role) = (me.nick.clone(), me.role);
    let fields = form::fields(x);
    let value = |var: &str| {
        fields
            .iter()
            .find(|(v, _)| v == var)
            .and_then(|(_, vals)| vals.first().cloned())
    };
    let answer = value("muc#request_allow").is_some() || value("muc#roomnick").is_some();
    let result = if role == Role::Moderator && answer {
        let allow = value("muc#request_allow")
            .and_then(|v| form::boolean(&v))
            .unwrap_or(false);
        approve(
            core,
            &mut r,
            &nick,
            value("muc#roomnick"),
            value("muc#jid"),
            allow,
        )
    } else {
        request(core, &mut r, &nick, role, Instant::now())
    };
    if let Err(e) = result {
        reply_error(core, stanza, e);
    }
}

/// A visitor asks for voice: forward the approval form to the moderators.
fn request(
    core: &Core,
    r: &mut Room,
    nick: &str,
    role: Role,
    now: Instant,
) -> Result<(), StanzaError> {
    if role != Role::Visitor {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("only visitors ask for voice; you have it"));
    }
    note_request(r, nick, now)?;
    let jid = r
        .by_nick(nick)
        .and_then(|o| o.primary())
        .map(|s| s.jid.to_string())
        .unwrap_or_default();
    let form = approval_form(&jid, nick);
    let msg = el("message", ns::CLIENT)
        .attr("from", r.jid.as_str())
        .attr("id", crate::core::random_hex(8))
        .child(form)
        .build();
    for o in r.occupants.iter().filter(|o| o.role == Role::Moderator) {
        for s in &o.sessions {
            send_to(core, &s.jid, msg.clone());
        }
    }
    tracing::debug!(room = %r.jid, %nick, "voice requested");
    Ok(())
}

/// Record a pending request by `nick`, refusing a second one while the
/// first is pending; forgets requests that expired or whose nick left.
pub fn note_request(r: &mut Room, nick: &str, now: Instant) -> Result<(), StanzaError> {
    let present: Vec<String> = r.occupants.iter().map(|o| o.nick.clone()).collect();
    r.voice_requests.retain(|n, at| {
        now.duration_since(*at) < REQUEST_INTERVAL && present.iter().any(|p| p == n)
    });
    if r.voice_requests.contains_key(nick) {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text("your request is waiting for a moderator"));
    }
    r.voice_requests.insert(nick.to_string(), now);
    Ok(())
}

/// The form moderators get (§8.6).
fn approval_form(jid: &str, nick: &str) -> Element {
    el("x", NS_DATA)
        .attr("type", "form")
        .child(el("title", NS_DATA).text("Voice request").build())
        .child(
            el("instructions", NS_DATA)
                .text("To let this person speak, tick the box and submit.")
                .build(),
        )
        .child(form_type_field(NS_REQUEST))
        .child(
            field(
                "muc#role",
                Some("list-single"),
                Some("Requested role"),
                &["participant"],
            )
            .child(option("Participant", "participant"))
            .build(),
        )
        .child(field("muc#jid", Some("jid-single"), Some("User ID"), &[jid]).build())
        .child(
            field(
                "muc#roomnick",
                Some("text-single"),
                Some("Room nickname"),
                &[nick],
            )
            .build(),
        )
        .child(
            field(
                "muc#request_allow",
                Some("boolean"),
                Some("Grant voice to this person?"),
                &["false"],
            )
            .build(),
        )
        .build()
}

/// A moderator answered a request.
fn approve(
    core: &Core,
    r: &mut Room,
    actor: &str,
    nick: Option<String>,
    jid: Option<String>,
    allow: bool,
) -> Result<(), StanzaError> {
    let target = match (&nick, &jid) {
        (Some(n), _) if r.by_nick(n).is_some() => Some(n.clone()),
        (_, Some(j)) => FullJid::new(j)
            .ok()
            .and_then(|j| r.by_session(&j).map(|o| o.nick.clone())),
        _ => None,
    };
    let Some(target) = target else {
        return Err(StanzaError::item_not_found().with_text("that person is not in the room"));
    };
    r.voice_requests.remove(&target);
    if !allow {
        return Ok(());
    }
    let Some(o) = r.by_nick_mut(&target) else {
        return Ok(());
    };
    // Someone else may have answered first.
    if o.role != Role::Visitor {
        return Ok(());
    }
    o.role = Role::Participant;
    let occ = o.clone();
    let extra = [el("actor", NS_USER).attr("nick", actor).build()];
    broadcast(core, r, &occ, &[], Some(&extra));
    tracing::debug!(room = %r.jid, nick = %target, by = %actor, "voice granted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::muc::config::RoomConfig;
    use crate::muc::room::{Joined, Occupant};
    use jid::BareJid;

    fn room_with(nick: &str) -> Room {
        let jid = BareJid::new("r@groups.example").unwrap();
        let owner = BareJid::new("o@example").unwrap();
        let mut r = Room::new("r".into(), jid, owner, RoomConfig::default());
        r.occupants.push(Occupant {
            nick: nick.into(),
            bare: BareJid::new("v@example").unwrap(),
            role: Role::Visitor,
            sessions: vec![Joined {
                jid: FullJid::new("v@example/phone").unwrap(),
                presence: Element::bare("presence", ns::CLIENT),
            }],
        });
        r
    }

    #[test]
    fn one_pending_request_per_occupant() {
        let mut r = room_with("v");
        let t0 = Instant::now();
        assert!(note_request(&mut r, "v", t0).is_ok());
        let again = note_request(&mut r, "v", t0 + Duration::from_secs(1));
        assert_eq!(again.unwrap_err().condition, "resource-constraint");
        assert!(note_request(&mut r, "v", t0 + REQUEST_INTERVAL).is_ok());
    }

    #[test]
    fn requests_of_people_who_left_are_forgotten() {
        let mut r = room_with("v");
        let t0 = Instant::now();
        r.voice_requests.insert("gone".into(), t0);
        note_request(&mut r, "v", t0).unwrap();
        assert!(!r.voice_requests.contains_key("gone"));
    }

    #[test]
    fn the_approval_form_names_the_visitor() {
        let f = approval_form("v@example/phone", "v");
        assert_eq!(form::form_type(&f).as_deref(), Some(NS_REQUEST));
        let fields = form::fields(&f);
        assert!(fields
            .iter()
            .any(|(v, vals)| v == "muc#roomnick" && vals == &["v"]));
        assert!(fields
            .iter()
            .any(|(v, vals)| v == "muc#request_allow" && vals == &["false"]));
    }
}
