//! A room's state: its configuration, affiliations, occupants, subject and
//! recent history, and the XEP-0045 rules that follow from them (default
//! roles, who may see real JIDs, who may change what). Nothing here sends
//! a stanza; `presence.rs`, `groupchat.rs`, `admin.rs` and `owner.rs` do.

use std::collections::{BTreeMap, VecDeque};

use jid::{BareJid, FullJid};
use minidom::Element;

use super::config::RoomConfig;
use crate::storage::muc::{StoredAffiliation, StoredRoom};

/// A long-lived relationship with the room (XEP-0045 §5.2), highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            "member" => Self::Member,
            "none" => Self::None,
            "outcast" => Self::Outcast,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::None => "none",
            Self::Outcast => "outcast",
        }
    }
}

/// A role within one visit (XEP-0045 §5.1), highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "moderator" => Self::Moderator,
            "participant" => Self::Participant,
            "visitor" => Self::Visitor,
            "none" => Self::None,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moderator => "moderator",
            Self::Participant => "participant",
            Self::Visitor => "visitor",
            Self::None => "none",
        }
    }
}

/// One joined session of an occupant, with the presence it last sent.
#[derive(Debug, Clone)]
pub struct Joined {
    pub jid: FullJid,
    /// The session's presence payload (show, status, caps…), without the MUC
    /// `<x/>`.
    pub presence: Element,
}

/// An occupant: a nick in the room, held by one account from one or more
/// of its sessions.
#[derive(Debug, Clone)]
pub struct Occupant {
    pub nick: String,
    pub bare: BareJid,
    pub role: Role,
    /// At least one; the last one is the newest and speaks for the occupant.
    pub sessions: Vec<Joined>,
}

impl Occupant {
    /// The session whose presence and JID represent the occupant.
    pub fn primary(&self) -> Option<&Joined> {
        self.sessions.last()
    }
    /// Whether `jid` is one of this occupant's sessions.
    pub fn has(&self, jid: &FullJid) -> bool {
        self.sessions.iter().any(|s| s.jid == *jid)
    }
}

/// An affiliation with its registered nick and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffEntry {
    pub affiliation: Affiliation,
    pub nick: Option<String>,
    pub reason: String,
}

/// Set (or clear, with `None`) an affiliation in `map`, keeping a registered nick.
pub fn set_in(
    map: &mut BTreeMap<BareJid, AffEntry>,
    bare: &BareJid,
    aff: Affiliation,
    reason: String,
) {
    let nick = map.get(bare).and_then(|a| a.nick.clone());
    if aff == Affiliation::None && nick.is_none() {
        map.remove(bare);
    } else {
        map.insert(
            bare.clone(),
            AffEntry {
                affiliation: aff,
                nick,
                reason,
            },
        );
    }
}

/// A groupchat message kept for history on join.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The message as broadcast (from the occupant JID, no `to`).
    pub stanza: Element,
    /// Microseconds since the Unix epoch.
    pub stamp: i64,
    /// Characters of the serialised message (for `maxchars`).
    pub chars: usize,
}

/// A room.
#[derive(Debug)]
pub struct Room {
    /// The localpart.
    pub name: String,
    /// `name@service`.
    pub jid: BareJid,
    pub config: RoomConfig,
    pub affiliations: BTreeMap<BareJid, AffEntry>,
    pub occupants: Vec<Occupant>,
    pub subject: String,
    pub subject_by: String,
    /// Created and not yet configured (XEP-0045 §10.1): only the owner may enter.
    pub locked: bool,
    pub history: VecDeque<HistoryEntry>,
    pub created: i64,
    pub creator: BareJid,
    /// Set once the room is destroyed; a stanza that waited for the lock sees it.
    pub destroyed: bool,
    /// The SHA-1 of the room picture (XEP-0486), when one is set (`avatar.rs`).
    pub avatar_hash: Option<String>,
    /// Pending voice requests: nick → when asked (`voice.rs`).
    pub voice_requests: BTreeMap<String, std::time::Instant>,
}

impl Room {
    /// A new, locked room owned by `creator`.
    pub fn new(name: String, jid: BareJid, creator: BareJid, config: RoomConfig) -> Self {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(
            creator.clone(),
            AffEntry {
                affiliation: Affiliation::Owner,
                nick: None,
                reason: String::new(),
            },
        );
        Room {
            name,
            jid,
            config,
            affiliations,
            occupants: Vec::new(),
            subject: String::new(),
            subject_by: String::new(),
            locked: true,
            history: VecDeque::new(),
            created: crate::upload::now(),
            creator,
            destroyed: false,
            avatar_hash: None,
            voice_requests: BTreeMap::new(),
        }
    }

    /// A room loaded from storage.
    pub fn load(stored: StoredRoom, affs: Vec<StoredAffiliation>, jid: BareJid) -> Option<Self> {
        let config = RoomConfig::from_stored(&stored.config);
        let creator = BareJid::new(&stored.creator).ok()?;
        let affiliations = affs
            .into_iter()
            .filter_map(|a| {
                Some((
                    BareJid::new(&a.jid).ok()?,
                    AffEntry {
                        affiliation: Affiliation::parse(&a.affiliation)?,
                        nick: a.nick,
                        reason: a.reason,
                    },
                ))
            })
            .collect();
        Some(Room {
            name: stored.name,
            jid,
            config,
            affiliations,
            occupants: Vec::new(),
            subject: stored.subject,
            subject_by: stored.subject_by,
            locked: false,
            history: VecDeque::new(),
            created: stored.created,
            creator,
            destroyed: false,
            avatar_hash: None,
            voice_requests: BTreeMap::new(),
        })
    }

    /// What storage keeps of the room with this configuration and these
    /// affiliations (a change is stored first and applied once stored).
    pub fn stored_with(
        &self,
        config: &RoomConfig,
        affiliations: &BTreeMap<BareJid, AffEntry>,
    ) -> (StoredRoom, Vec<StoredAffiliation>) {
        let room = StoredRoom {
            name: self.name.clone(),
            config: config.to_stored(),
            subject: self.subject.clone(),
            subject_by: self.subject_by.clone(),
            created: self.created,
            creator: self.creator.to_string(),
        };
        let affs = affiliations
            .iter()
            .map(|(jid, a)| StoredAffiliation {
                jid: jid.to_string(),
                affiliation: a.affiliation.as_str().to_string(),
                nick: a.nick.clone(),
                reason: a.reason.clone(),
            })
            .collect();
        (room, affs)
    }

    /// The affiliation of an account.
    pub fn affiliation(&self, bare: &BareJid) -> Affiliation {
        self.affiliations
            .get(bare)
            .map(|a| a.affiliation)
            .unwrap_or(Affiliation::None)
    }

    /// Accounts with an affiliation.
    pub fn with_affiliation(&self, aff: Affiliation) -> Vec<(&BareJid, &AffEntry)> {
        self.affiliations
            .iter()
            .filter(|(_, a)| a.affiliation == aff)
            .collect()
    }

    /// The role an account gets when it enters.
    pub fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The occupant holding `nick`.
    pub fn by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    /// The occupant holding `nick`, mutably.
    pub fn by_nick_mut(&mut self, nick: &str) -> Option<&mut Occupant> {
        self.occupants.iter_mut().find(|o| o.nick == nick)
    }

    /// The occupant one of whose sessions is `jid`.
    pub fn by_session(&self, jid: &FullJid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.has(jid))
    }

    /// The occupants of an account.
    pub fn by_bare<'a>(&'a self, bare: &'a BareJid) -> impl Iterator<Item = &'a Occupant> {
        self.occupants.iter().filter(move |o| o.bare == *bare)
    }

    /// Whether `nick` is registered to someone other than `bare`.
    pub fn nick_reserved_for_other(&self, nick: &str, bare: &BareJid) -> bool {
        self.affiliations
            .iter()
            .any(|(j, a)| a.nick.as_deref() == Some(nick) && j != bare)
    }

    /// Whether a receiver with `role` sees occupants' real JIDs.
    pub fn shows_jids_to(&self, role: Role) -> bool {
        self.config.whois_anyone || role == Role::Moderator
    }

    /// Whether the room is non-anonymous (XEP-0045 status 100).
    pub fn non_anonymous(&self) -> bool {
        self.config.whois_anyone
    }

    /// The number of distinct occupants.
    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        let jid = BareJid::new("r@groups.example").unwrap();
        let owner = BareJid::new("o@example").unwrap();
        Room::new("r".into(), jid, owner, RoomConfig::default())
    }

    #[test]
    fn default_roles_follow_affiliation_and_moderation() {
        let mut r = room();
        assert_eq!(r.default_role(Affiliation::Owner), Role::Moderator);
        assert_eq!(r.default_role(Affiliation::Member), Role::Participant);
        assert_eq!(r.default_role(Affiliation::None), Role::Participant);
        r.config.moderated = true;
        assert_eq!(r.default_role(Affiliation::None), Role::Visitor);
        assert_eq!(r.default_role(Affiliation::Outcast), Role::None);
    }

    #[test]
    fn affiliations_keep_registered_nicks() {
        let mut r = room();
        let b = BareJid::new("b@example").unwrap();
        set_in(&mut r.affiliations, &b, Affiliation::Member, String::new());
        r.affiliations.get_mut(&b).unwrap().nick = Some("bee".into());
        set_in(&mut r.affiliations, &b, Affiliation::None, String::new());
        assert_eq!(r.affiliation(&b), Affiliation::None);
        assert!(r.nick_reserved_for_other("bee", &r.creator.clone()));
        assert!(!r.nick_reserved_for_other("bee", &b));
        assert_eq!(r.affiliation(&r.creator.clone()), Affiliation::Owner);
    }
}
