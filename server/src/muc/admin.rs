//! Roles and affiliations (XEP-0045 §8, §9, §10.3–§10.8): kicks (307),
//! voice, moderator rights, bans (301), membership (321 when a members-only
//! room loses a member), admins and owners, and the lists of each.
//!
//! Who may do what follows the XEP: moderators change roles of those below
//! admin; admins change affiliations up to member; owners change any; the
//! last owner stays. All items of one request are checked before any is
//! applied. Members of a room whose settings allow it read the member,
//! admin and owner lists — what OMEMO clients need to encrypt to everyone.

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use super::presence::{broadcast, occupant_presence, send_all};
use super::room::{set_in, Affiliation, Role, Room};
use super::service::RoomRef;
use super::{owner, NS_ADMIN, NS_USER};
use crate::core::Core;
use crate::registry::IqResult;
use crate::stanza::StanzaError;
use crate::xml::{attr_set, el};

/// Items in one request, at most.
const MAX_ITEMS: usize = 100;

/// A muc#admin query.
pub async fn handle(
    core: &Arc<Core>,
    room: &RoomRef,
    from: &FullJid,
    set: bool,
    q: &Element,
) -> IqResult {
    let mut r = room.lock().await;
    if r.destroyed {
        return Err(StanzaError::item_not_found());
    }
    if set {
        change(core, &mut r, from, q).await
    } else {
        list(&r, from, q)
    }
}

/// One requested change.
enum Change {
    Role { nick: String, role: Role },
    Affiliation { jid: BareJid, aff: Affiliation },
}

fn forbidden(text: &str) -> StanzaError {
    StanzaError::new("auth", "forbidden").with_text(text.to_string())
}

fn not_allowed(text: &str) -> StanzaError {
    StanzaError::not_allowed().with_text(text.to_string())
}

async fn change(core: &Arc<Core>, r: &mut Room, from: &FullJid, q: &Element) -> IqResult {
    let actor_bare = from.to_bare();
    let actor_aff = r.affiliation(&actor_bare);
    let actor_role = r.by_session(from).map(|o| o.role).unwrap_or(Role::None);
    let actor_nick = r.by_session(from).map(|o| o.nick.clone());
    let items: Vec<&Element> = q.children().filter(|c| c.is("item", NS_ADMIN)).collect();
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(StanzaError::bad_request().with_text("one to 100 items"));
    }
    // Check everything first.
    let mut changes = Vec::new();
    let mut reasons = Vec::new();
    let mut owners_after: Vec<BareJid> = r
        .with_affiliation(Affiliation::Owner)
        .into_iter()
        .map(|(j, _)| j.clone())
        .collect();
    for item in &items {
        let reason = item
            .get_child("reason", NS_ADMIN)
            .map(|e| e.text())
            .unwrap_or_default();
        if let Some(aff) = item.attr("affiliation") {
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let jid = match (item.attr("jid"), item.attr("nick")) {
                (Some(j), _) => Jid::new(j)
                    .map_err(|_| StanzaError::jid_malformed())?
                    .to_bare(),
                (None, Some(n)) => r
                    .by_nick(n)
                    .map(|o| o.bare.clone())
                    .ok_or_else(StanzaError::item_not_found)?,
                (None, None) => {
                    return Err(StanzaError::bad_request().with_text("an item needs a jid"))
                }
            };
            let current = r.affiliation(&jid);
            let may = match actor_aff {
                Affiliation::Owner => true,
                Affiliation::Admin => current < Affiliation::Admin && aff < Affiliation::Admin,
                _ => false,
            };
            if !may {
                return Err(if actor_aff >= Affiliation::Admin {
                    not_allowed("admins may not change admins or owners")
                } else {
                    forbidden("only admins and owners change affiliations")
                });
            }
            if aff == Affiliation::Owner {
                if !owners_after.contains(&jid) {
                    owners_after.push(jid.clone());
                }
            } else {
                owners_after.retain(|o| *o != jid);
            }
            changes.push(Change::Affiliation { jid, aff });
        } else if let Some(role) = item.attr("role") {
            let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
            let nick = item
                .attr("nick")
                .ok_or_else(|| StanzaError::bad_request().with_text("a role change needs a nick"))?
                .to_string();
            let target = r.by_nick(&nick).ok_or_else(|| {
                StanzaError::new("cancel", "item-not-found").with_text("nobody has that nick here")
            })?;
            if actor_role != Role::Moderator {
                return Err(forbidden("only moderators change roles"));
            }
            let target_aff = r.affiliation(&target.bare);
            // Granting or revoking moderator needs an admin; nobody changes
            // the role of someone of equal or higher affiliation above member.
            if (role == Role::Moderator || target.role == Role::Moderator)
                && actor_aff < Affiliation::Admin
            {
                return Err(not_allowed("only admins and owners change moderators"));
            }
            if target_aff >= Affiliation::Admin
                && (target_aff >= actor_aff || role < Role::Moderator)
            {
                return Err(not_allowed("admins and owners keep their role"));
            }
            changes.push(Change::Role { nick, role });
        } else {
            return Err(
                StanzaError::bad_request().with_text("an item needs a role or an affiliation")
            );
        }
        reasons.push(reason);
    }
    if owners_after.is_empty() {
        return Err(
            StanzaError::new("cancel", "conflict").with_text("a room keeps at least one owner")
        );
    }
    // Store the new affiliations before anyone hears of them.
    let mut affs = r.affiliations.clone();
    let mut any_affiliation = false;
    for (c, reason) in changes.iter().zip(&reasons) {
        if let Change::Affiliation { jid, aff } = c {
            any_affiliation = true;
            set_in(&mut affs, jid, *aff, reason.clone());
        }
    }
    if any_affiliation {
        owner::store(core, r, &r.config, &affs).await?;
    }
    // Apply.
    let actor = match &actor_nick {
        Some(n) => el("actor", NS_USER).attr("nick", n.clone()).build(),
        None => el("actor", NS_USER)
            .attr("jid", actor_bare.as_str())
            .build(),
    };
    for (c, reason) in changes.into_iter().zip(reasons) {
        match c {
            Change::Role { nick, role } => set_role(core, r, &nick, role, &actor, &reason),
            Change::Affiliation { jid, aff } => set_affiliation(core, r, &jid, aff, &actor, reason),
        }
    }
    Ok(None)
}

/// Give `nick` a new role; `none` kicks (307).
fn set_role(core: &Core, r: &mut Room, nick: &str, role: Role, actor: &Element, reason: &str) {
    let Some(idx) = r.occupants.iter().position(|o| o.nick == nick) else {
        return;
    };
    let extra = item_extra(actor, reason);
    if role == Role::None {
        let mut occ = r.occupants.remove(idx);
        occ.role = Role::None;
        for s in &occ.sessions {
            core.muc.mark(&s.jid, &r.name, false);
        }
        removed(core, r, &occ, &[307], &extra);
        return;
    }
    r.occupants[idx].role = role;
    let occ = r.occupants[idx].clone();
    broadcast(core, r, &occ, &[], Some(&extra));
}

/// Give `jid` a new affiliation, and its occupants the role that follows;
/// a ban (301) or a lost membership of a members-only room (321) removes them.
pub(super) fn set_affiliation(
    core: &Core,
    r: &mut Room,
    jid: &BareJid,
    aff: Affiliation,
    actor: &Element,
    reason: String,
) {
    set_in(&mut r.affiliations, jid, aff, reason.clone());
    let extra = item_extra(actor, &reason);
    let removal = match aff {
        Affiliation::Outcast => Some(301),
        a if r.config.members_only && a < Affiliation::Member => Some(321),
        _ => None,
    };
    let nicks: Vec<String> = r.by_bare(jid).map(|o| o.nick.clone()).collect();
    for nick in nicks {
        let Some(idx) = r.occupants.iter().position(|o| o.nick == nick) else {
            continue;
        };
        if let Some(code) = removal {
            let mut occ = r.occupants.remove(idx);
            occ.role = Role::None;
            for s in &occ.sessions {
                core.muc.mark(&s.jid, &r.name, false);
            }
            removed(core, r, &occ, &[code], &extra);
        } else {
            let role = r.default_role(aff);
            r.occupants[idx].role = role;
            let occ = r.occupants[idx].clone();
            broadcast(core, r, &occ, &[], Some(&extra));
        }
    }
}

/// Tell a removed occupant (with 110) and everyone left that it is gone.
pub fn removed(
    core: &Core,
    r: &Room,
    occ: &super::room::Occupant,
    codes: &[u16],
    extra: &[Element],
) {
    let mut own_codes = codes.to_vec();
    own_codes.push(110);
    let mut own = occupant_presence(core, r, occ, true, &own_codes);
    attr_set(&mut own, "type", "unavailable");
    super::presence::add_to_item(&mut own, extra);
    for s in &occ.sessions {
        super::send_to(core, &s.jid, own.clone());
    }
    let mut p = occupant_presence(core, r, occ, true, codes);
    attr_set(&mut p, "type", "unavailable");
    super::presence::add_to_item(&mut p, extra);
    send_all(core, r, &p);
}

fn item_extra(actor: &Element, reason: &str) -> Vec<Element> {
    let mut v = vec![actor.clone()];
    if !reason.is_empty() {
        v.push(el("reason", NS_USER).text(reason).build());
    }
    v
}

/// A list of occupants by role or of accounts by affiliation.
fn list(r: &Room, from: &FullJid, q: &Element) -> IqResult {
    let mut children = q.children().filter(|c| c.is("item", NS_ADMIN));
    let (Some(item), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request().with_text("ask for one role or affiliation"));
    };
    let bare = from.to_bare();
    let aff = r.affiliation(&bare);
    let role = r.by_session(from).map(|o| o.role).unwrap_or(Role::None);
    let mut out = el("query", NS_ADMIN);
    if let Some(a) = item.attr("affiliation") {
        let wanted = Affiliation::parse(a).ok_or_else(StanzaError::bad_request)?;
        let member_list = matches!(
            wanted,
            Affiliation::Member | Affiliation::Admin | Affiliation::Owner
        );
        // The member list is for members (and roles the room allows);
        // outcasts are for admins.
        let may = aff >= Affiliation::Admin
            || (member_list
                && (aff >= Affiliation::Member && r.config.members_only
                    || (role > Role::None
                        && r.config.get_member_list.iter().any(|x| x == role.as_str()))));
        if !may {
            return Err(forbidden("you may not see that list"));
        }
        for (jid, entry) in r.with_affiliation(wanted) {
            let mut i = el("item", NS_ADMIN)
                .attr("affiliation", wanted.as_str())
                .attr("jid", jid.as_str());
            if let Some(n) = &entry.nick {
                i = i.attr("nick", n.clone());
            }
            if !entry.reason.is_empty() && aff >= Affiliation::Admin {
                i = i.child(el("reason", NS_ADMIN).text(entry.reason.clone()).build());
            }
            out = out.child(i.build());
        }
    } else if let Some(ro) = item.attr("role") {
        let wanted = Role::parse(ro).ok_or_else(StanzaError::bad_request)?;
        if role != Role::Moderator {
            return Err(forbidden("only moderators see role lists"));
        }
        for o in r.occupants.iter().filter(|o| o.role == wanted) {
            let mut i = el("item", NS_ADMIN)
                .attr("nick", o.nick.clone())
                .attr("role", wanted.as_str())
                .attr("affiliation", r.affiliation(&o.bare).as_str());
            if let Some(s) = o.primary() {
                i = i.attr("jid", s.jid.as_str());
            }
            out = out.child(i.build());
        }
    } else {
        return Err(StanzaError::bad_request());
    }
    Ok(Some(out.build()))
}
