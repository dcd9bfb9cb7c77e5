//! Entering and leaving rooms, presence updates and nick changes
//! (XEP-0045 §7.1–§7.4, §7.6, §10.1.1), with the status codes clients key
//! on: 110 (this is you), 100 (real JIDs visible), 170 (archived), 201
//! (room created), 303 (nick changed).
//!
//! Entering checks, in order: join rate, locked room (item-not-found),
//! ban (forbidden), nick taken or registered to another (conflict),
//! members-only (registration-required), password (not-authorized), room
//! full (service-unavailable). The newcomer then gets everyone's presence,
//! its own with 110, the history and the subject, in that order (§7.2.3).

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;

use super::config::RoomConfig;
use super::room::{Affiliation, Joined, Occupant, Role, Room};
use super::service::RoomRef;
use super::{history, occupant_id, send_to, NS_MUC, NS_USER};
use crate::core::Core;
use crate::stanza::{error_reply, StanzaError};
use crate::xml::{attr_set, el, ns};

/// Longest nick, in characters.
const MAX_NICK: usize = 64;

/// A presence from `from` to `room/nick`.
pub async fn handle(core: &Arc<Core>, from: &FullJid, node: &str, nick: &str, stanza: &Element) {
    match stanza.attr("type") {
        None => available(core, from, node, nick, stanza).await,
        Some("unavailable") => {
            if let Some(room) = super::existing(core, node).await {
                let status = stanza.get_child("status", ns::CLIENT).map(|s| s.text());
                leave(core, &room, from, status).await;
            }
        }
        // Subscriptions and probes mean nothing to a room.
        _ => {}
    }
}

/// An available presence: enter, change nick, or update presence.
async fn available(core: &Arc<Core>, from: &FullJid, node: &str, nick: &str, stanza: &Element) {
    let refuse = |err: StanzaError| refuse(core, from, node, nick, err);
    if nick.trim().is_empty() || nick.chars().count() > MAX_NICK {
        refuse(StanzaError::new("modify", "jid-malformed").with_text("that nick is not allowed"));
        return;
    }
    let muc_x = stanza.get_child("x", NS_MUC);
    let payload = presence_payload(stanza);
    let bare = from.to_bare();
    let room = match super::existing(core, node).await {
        Some(r) => r,
        None => {
            if !core.muc.join_allowed(&bare, core.config.muc.join_rate) {
                refuse(
                    StanzaError::new("wait", "resource-constraint")
                        .with_text("too many joins; try again in a minute"),
                );
                return;
            }
            match create(core, &bare, node, muc_x.is_none()).await {
                Ok(r) => r,
                Err(e) => {
                    refuse(e);
                    return;
                }
            }
        }
    };
    let mut r = room.lock().await;
    if r.destroyed {
        refuse(StanzaError::item_not_found());
        return;
    }
    // Already in the room from this session?
    if let Some(current) = r.by_session(from).map(|o| o.nick.clone()) {
        if current == nick {
            update(core, &mut r, from, payload, muc_x.is_some());
        } else {
            change_nick(core, &mut r, from, &current, nick, payload);
        }
        return;
    }
    if !core.muc.join_allowed(&bare, core.config.muc.join_rate) {
        refuse(
            StanzaError::new("wait", "resource-constraint")
                .with_text("too many joins; try again in a minute"),
        );
        return;
    }
    let created = r.locked && r.occupants.is_empty() && r.affiliation(&bare) == Affiliation::Owner;
    if let Err(e) = may_enter(core, &r, &bare, nick, muc_x) {
        refuse(e);
        return;
    }
    enter(core, &mut r, from, nick, payload, created, muc_x);
}

/// Create room `node` for `creator`: locked until configured, or unlocked
/// at once (an instant room) for a client that did not speak MUC.
async fn create(
    core: &Arc<Core>,
    creator: &BareJid,
    node: &str,
    instant: bool,
) -> Result<RoomRef, StanzaError> {
    if creator.domain().as_str() != core.domain {
        return Err(
            StanzaError::not_allowed().with_text("only this server's accounts create rooms")
        );
    }
    let limits = &core.config.muc;
    let count = core
        .muc
        .count(core)
        .await
        .map_err(|_| StanzaError::internal())?;
    if count >= limits.max_rooms {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text("this server has as many rooms as it allows"));
    }
    if core.muc.owned_by(core, creator).await >= limits.max_rooms_per_user {
        return Err(StanzaError::not_allowed().with_text(format!(
            "you own {} rooms already, the most allowed",
            limits.max_rooms_per_user
        )));
    }
    let jid = super::room_jid(core, node).ok_or_else(StanzaError::jid_malformed)?;
    let mut room = Room::new(
        node.to_string(),
        jid,
        creator.clone(),
        RoomConfig::default(),
    );
    room.config.max_history = room.config.max_history.min(limits.max_history);
    if instant {
        room.locked = false;
        super::owner::persist(core, &room).await?;
    }
    tracing::info!(room = %room.jid, by = %creator, "room created");
    core.muc
        .insert(core, room)
        .await
        .map_err(|_| StanzaError::internal())
}

/// Whether `bare` may enter as `nick`.
fn may_enter(
    core: &Core,
    r: &Room,
    bare: &BareJid,
    nick: &str,
    muc_x: Option<&Element>,
) -> Result<(), StanzaError> {
    let aff = r.affiliation(bare);
    if r.locked && aff != Affiliation::Owner {
        return Err(StanzaError::item_not_found().with_text("this room is still being set up"));
    }
    if aff == Affiliation::Outcast {
        return Err(
            StanzaError::new("auth", "forbidden").with_text("you are banned from this room")
        );
    }
    let taken = r.by_nick(nick).is_some_and(|o| o.bare != *bare);
    if taken || r.nick_reserved_for_other(nick, bare) {
        return Err(StanzaError::new("cancel", "conflict").with_text("that nick is in use"));
    }
    if r.config.members_only && aff < Affiliation::Member {
        return Err(StanzaError::new("auth", "registration-required")
            .with_text("this room is for members only"));
    }
    if !r.config.password.is_empty() && aff < Affiliation::Owner {
        let given = muc_x
            .and_then(|x| x.get_child("password", NS_MUC))
            .map(|p| p.text());
        if given.as_deref() != Some(r.config.password.as_str()) {
            return Err(
                StanzaError::new("auth", "not-authorized").with_text("this room needs a password")
            );
        }
    }
    let limit = match r.config.max_users {
        0 => core.config.muc.max_occupants,
        n => n.min(core.config.muc.max_occupants),
    };
    let new_nick = r.by_nick(nick).is_none();
    if new_nick && r.occupant_count() >= limit && aff < Affiliation::Admin {
        return Err(StanzaError::new("wait", "service-unavailable").with_text("the room is full"));
    }
    Ok(())
}

/// Enter: add the session, tell everyone, then send the newcomer the room.
fn enter(
    core: &Core,
    r: &mut Room,
    from: &FullJid,
    nick: &str,
    payload: Element,
    created: bool,
    muc_x: Option<&Element>,
) {
    let bare = from.to_bare();
    let joined = Joined {
        jid: from.clone(),
        presence: payload,
    };
    let is_new = match r.by_nick_mut(nick) {
        // Another session of the same account under the same nick.
        Some(o) => {
            o.sessions.push(joined);
            false
        }
        None => {
            let role = r.default_role(r.affiliation(&bare));
            r.occupants.push(Occupant {
                nick: nick.to_string(),
                bare: bare.clone(),
                role,
                sessions: vec![joined],
            });
            true
        }
    };
    core.muc.mark(from, &r.name, true);
    tracing::debug!(room = %r.jid, %nick, "entered");
    let Some(me) = r.by_nick(nick) else { return };
    // Everyone else's presence to the newcomer.
    for o in r.occupants.iter().filter(|o| o.nick != nick) {
        let p = occupant_presence(core, r, o, r.shows_jids_to(me.role), &[]);
        send_to(core, from, p);
    }
    // The newcomer's presence to everyone else.
    if is_new {
        for o in r.occupants.iter().filter(|o| o.nick != nick) {
            let p = occupant_presence(core, r, me, r.shows_jids_to(o.role), &[]);
            for s in &o.sessions {
                send_to(core, &s.jid, p.clone());
            }
        }
    }
    // Its own, with the status codes.
    let mut codes = vec![110];
    if r.non_anonymous() {
        codes.push(100);
    }
    if r.config.archiving {
        codes.push(170);
    }
    if created {
        codes.push(201);
    }
    let p = occupant_presence(core, r, me, true, &codes);
    send_to(core, from, p);
    history::send(
        core,
        r,
        from,
        muc_x.and_then(|x| x.get_child("history", NS_MUC)),
    );
    send_subject(core, r, from);
}

/// The same session sent presence to its own nick again: a status update,
/// or (with the MUC `<x/>`) a client re-entering after losing track, which
/// gets the room again.
fn update(core: &Core, r: &mut Room, from: &FullJid, payload: Element, rejoin: bool) {
    let Some(o) = r.occupants.iter_mut().find(|o| o.has(from)) else {
        return;
    };
    if let Some(pos) = o.sessions.iter().position(|s| s.jid == *from) {
        // The session that spoke last represents the occupant.
        let mut s = o.sessions.remove(pos);
        s.presence = payload;
        o.sessions.push(s);
    }
    let nick = o.nick.clone();
    let Some(me) = r.by_nick(&nick) else { return };
    if rejoin {
        for o in r.occupants.iter().filter(|o| o.nick != nick) {
            send_to(
                core,
                from,
                occupant_presence(core, r, o, r.shows_jids_to(me.role), &[]),
            );
        }
    }
    broadcast(core, r, me, &[], None);
    if rejoin {
        history::send(core, r, from, None);
        send_subject(core, r, from);
    }
}

/// Change the nick of `from`'s occupant from `old` to `new` (§7.6).
fn change_nick(core: &Core, r: &mut Room, from: &FullJid, old: &str, new: &str, payload: Element) {
    let bare = from.to_bare();
    let taken = r.by_nick(new).is_some();
    if taken || r.nick_reserved_for_other(new, &bare) {
        refuse(
            core,
            from,
            &r.name,
            new,
            StanzaError::new("cancel", "conflict").with_text("that nick is in use"),
        );
        return;
    }
    let Some(idx) = r.occupants.iter().position(|o| o.nick == old) else {
        return;
    };
    if r.occupants[idx].sessions.len() > 1 {
        // One device of several renames itself: it leaves the old occupant
        // and becomes a new one.
        let mut old_occ = r.occupants[idx].clone();
        old_occ.sessions.retain(|s| s.jid == *from);
        r.occupants[idx].sessions.retain(|s| s.jid != *from);
        let gone = nick_change_presence(core, r, &old_occ, new, true);
        send_to(core, from, gone);
        let role = r.occupants[idx].role;
        r.occupants.push(Occupant {
            nick: new.to_string(),
            bare,
            role,
            sessions: vec![Joined {
                jid: from.clone(),
                presence: payload,
            }],
        });
    } else {
        // Everyone sees the old nick leave with 303 and the new one arrive.
        let occ = r.occupants[idx].clone();
        for o in &r.occupants {
            let sees = r.shows_jids_to(o.role);
            for s in &o.sessions {
                let mut p = nick_change_presence(core, r, &occ, new, o.nick == occ.nick);
                if !sees {
                    strip_jid(&mut p);
                }
                send_to(core, &s.jid, p);
            }
        }
        let o = &mut r.occupants[idx];
        o.nick = new.to_string();
        if let Some(s) = o.sessions.last_mut() {
            s.presence = payload;
        }
    }
    if let Some(me) = r.by_nick(new) {
        broadcast(core, r, me, &[], None);
    }
}

/// The unavailable presence from `occ`'s old nick announcing `new` (303).
fn nick_change_presence(core: &Core, r: &Room, occ: &Occupant, new: &str, own: bool) -> Element {
    let codes: &[u16] = if own { &[303, 110] } else { &[303] };
    let mut p = occupant_presence(core, r, occ, true, codes);
    attr_set(&mut p, "type", "unavailable");
    if let Some(item) = p
        .get_child_mut("x", NS_USER)
        .and_then(|x| x.get_child_mut("item", NS_USER))
    {
        attr_set(item, "nick", new);
    }
    p
}

/// `from` left the room (or its session ended).
pub async fn leave(core: &Arc<Core>, room: &RoomRef, from: &FullJid, status: Option<String>) {
    leave_with(core, room, from, status, &[]).await
}

/// `from` cannot be reached (its server says the session is gone): it is
/// taken out of the room with status 333 so it does not linger as a ghost.
pub async fn unreachable(core: &Arc<Core>, room: &RoomRef, from: &FullJid) {
    leave_with(core, room, from, None, &[333]).await
}

/// `from` leaves, everyone hearing `codes` with it.
async fn leave_with(
    core: &Arc<Core>,
    room: &RoomRef,
    from: &FullJid,
    status: Option<String>,
    codes: &[u16],
) {
    let mut r = room.lock().await;
    let Some(idx) = r.occupants.iter().position(|o| o.has(from)) else {
        return;
    };
    core.muc.mark(from, &r.name, false);
    let mut occ = r.occupants[idx].clone();
    occ.role = Role::None;
    let mut payload = Element::bare("presence", ns::CLIENT);
    if let Some(s) = status {
        payload.append_child(el("status", ns::CLIENT).text(s).build());
    }
    if let Some(s) = occ.sessions.iter_mut().find(|s| s.jid == *from) {
        s.presence = payload;
    }
    occ.sessions.retain(|s| s.jid == *from);
    let own_codes: Vec<u16> = codes.iter().copied().chain([110]).collect();
    let mut own = occupant_presence(core, &r, &occ, true, &own_codes);
    attr_set(&mut own, "type", "unavailable");
    send_to(core, from, own);
    r.occupants[idx].sessions.retain(|s| s.jid != *from);
    if r.occupants[idx].sessions.is_empty() {
        r.occupants.remove(idx);
        tracing::debug!(room = %r.jid, nick = %occ.nick, "left");
        let mut p = occupant_presence(core, &r, &occ, true, codes);
        attr_set(&mut p, "type", "unavailable");
        send_all(core, &r, &p);
    }
    if r.occupants.is_empty() && (!r.config.persistent || r.locked) {
        r.destroyed = true;
        super::archive::forget(core, &r).await;
        let name = r.name.clone();
        drop(r);
        core.muc.remove(core, &name).await;
        tracing::debug!(room = %name, "temporary room closed");
    }
}

/// The presence of `occ` as a receiver sees it: its show and status, the
/// `muc#user` item (with the real JID when `with_jid`), status codes and
/// the occupant id.
pub fn occupant_presence(
    core: &Core,
    r: &Room,
    occ: &Occupant,
    with_jid: bool,
    codes: &[u16],
) -> Element {
    let mut p = occ
        .primary()
        .map(|s| s.presence.clone())
        .unwrap_or_else(|| Element::bare("presence", ns::CLIENT));
    attr_set(&mut p, "from", format!("{}/{}", r.jid, occ.nick));
    let aff = r.affiliation(&occ.bare);
    let mut item = el("item", NS_USER)
        .attr("affiliation", aff.as_str())
        .attr("role", occ.role.as_str());
    if with_jid {
        if let Some(s) = occ.primary() {
            item = item.attr("jid", s.jid.as_str());
        }
    }
    let mut x = el("x", NS_USER).child(item.build());
    for c in codes {
        x = x.child(el("status", NS_USER).attr("code", c.to_string()).build());
    }
    p.append_child(x.build());
    p.append_child(occupant_id::element(core, r, &occ.bare));
    p
}

/// Send `occ`'s presence to every occupant, each seeing real JIDs or not
/// by its role; `codes` go to everyone, 110 is added for `occ`'s own
/// sessions. `item_extra` (an actor, a reason) goes into the item.
pub fn broadcast(
    core: &Core,
    r: &Room,
    occ: &Occupant,
    codes: &[u16],
    item_extra: Option<&[Element]>,
) {
    for o in &r.occupants {
        let own = o.nick == occ.nick;
        let mut all: Vec<u16> = codes.to_vec();
        if own {
            all.push(110);
        }
        let mut p = occupant_presence(core, r, occ, own || r.shows_jids_to(o.role), &all);
        if let Some(extra) = item_extra {
            add_to_item(&mut p, extra);
        }
        for s in &o.sessions {
            send_to(core, &s.jid, p.clone());
        }
    }
}

/// Put `extra` (actor, reason) into the presence's `muc#user` item.
pub fn add_to_item(p: &mut Element, extra: &[Element]) {
    if let Some(item) = p
        .get_child_mut("x", NS_USER)
        .and_then(|x| x.get_child_mut("item", NS_USER))
    {
        for e in extra {
            item.append_child(e.clone());
        }
    }
}

/// Remove the real JID from a presence's item (for receivers who may not see it).
pub fn strip_jid(p: &mut Element) {
    if let Some(item) = p
        .get_child_mut("x", NS_USER)
        .and_then(|x| x.get_child_mut("item", NS_USER))
    {
        crate::xml::attr_remove(item, "jid");
    }
}

/// Send a copy of `stanza` to every session in the room.
pub fn send_all(core: &Core, r: &Room, stanza: &Element) {
    for o in &r.occupants {
        let sees = r.shows_jids_to(o.role);
        let mut copy = stanza.clone();
        if !sees {
            strip_jid(&mut copy);
        }
        for s in &o.sessions {
            send_to(core, &s.jid, copy.clone());
        }
    }
}

/// The room's subject message (an empty `<subject/>` when there is none).
pub fn send_subject(core: &Core, r: &Room, to: &FullJid) {
    let from = if r.subject_by.is_empty() {
        r.jid.to_string()
    } else {
        format!("{}/{}", r.jid, r.subject_by)
    };
    let m = el("message", ns::CLIENT)
        .attr("type", "groupchat")
        .attr("from", from)
        .attr("id", crate::core::random_hex(8))
        .child(el("subject", ns::CLIENT).text(r.subject.clone()).build())
        .build();
    send_to(core, to, m);
}

/// The presence payload worth repeating to the room: the stanza's children
/// other than MUC's own, in a fresh `<presence/>`.
fn presence_payload(stanza: &Element) -> Element {
    let mut p = Element::bare("presence", ns::CLIENT);
    for c in stanza.children() {
        if c.is("x", NS_MUC) || c.is("x", NS_USER) || c.is("occupant-id", occupant_id::NS) {
            continue;
        }
        p.append_child(c.clone());
    }
    p
}

/// Refuse an entrance or nick change: an error presence from `room/nick`.
pub fn refuse(core: &Core, to: &FullJid, node: &str, nick: &str, err: StanzaError) {
    let Some(room) = super::room_jid(core, node) else {
        return;
    };
    // The entrance as it came in; error_reply turns it around.
    let p = el("presence", ns::CLIENT)
        .attr("from", to.as_str())
        .attr("to", format!("{room}/{nick}"))
        .child(Element::bare("x", NS_MUC))
        .build();
    if let Some(reply) = error_reply(&p, &err) {
        send_to(core, to, reply);
    }
}
