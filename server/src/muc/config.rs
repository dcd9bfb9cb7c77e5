//! A room's configuration (XEP-0045 §10.2): the household defaults, the
//! `muc#roomconfig` form owners fill in, its parsing (unknown fields are
//! ignored, bad values refused), and the stored copy (the same form, as
//! submitted).

use minidom::Element;

use crate::stanza::StanzaError;
use crate::xml::el;
use crate::xml::form::{self, field, option, NS_DATA};

pub const FORM_TYPE: &str = "http://jabber.org/protocol/muc#roomconfig";

/// Who may send private messages through the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    Nobody,
}

impl AllowPm {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "anyone" => Self::Anyone,
            "participants" => Self::Participants,
            "moderators" => Self::Moderators,
            "none" => Self::Nobody,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::Participants => "participants",
            Self::Moderators => "moderators",
            Self::Nobody => "none",
        }
    }
}

/// The settings of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub language: String,
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// Empty: no password.
    pub password: String,
    /// Real JIDs visible to everyone (non-anonymous) rather than moderators only.
    pub whois_anyone: bool,
    /// Messages sent as history on join (0: none).
    pub max_history: usize,
    /// Members (not only admins) may invite.
    pub allow_invites: bool,
    /// Messages are archived (MUC MAM).
    pub archiving: bool,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    pub allow_pm: AllowPm,
    /// Occupants at most (0: the service's limit).
    pub max_users: usize,
    /// Occupants with these roles may retrieve the member list (OMEMO).
    pub get_member_list: Vec<String>,
}

impl Default for RoomConfig {
    /// The household defaults: a persistent, hidden, members-only,
    /// non-anonymous, archived room — what OMEMO group chats need.
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            language: String::new(),
            persistent: true,
            public: false,
            members_only: true,
            moderated: false,
            password: String::new(),
            whois_anyone: true,
            max_history: 20,
            allow_invites: true,
            archiving: true,
            change_subject: true,
            allow_pm: AllowPm::Anyone,
            max_users: 0,
            get_member_list: vec!["moderator".into(), "participant".into(), "visitor".into()],
        }
    }
}

impl RoomConfig {
    /// The form an owner fills in (`type='form'`), with the current values.
    pub fn to_form(&self, service_max_users: usize, service_max_history: usize) -> Element {
        let b = |v: bool| if v { "1" } else { "0" };
        let max_users = if self.max_users == 0 {
            service_max_users
        } else {
            self.max_users
        }
        .to_string();
        let history = self.max_history.to_string();
        el("x", NS_DATA)
            .attr("type", "form")
            .child(el("title", NS_DATA).text("Room settings").build())
            .child(form::form_type_field(FORM_TYPE))
            .child(
                field(
                    "muc#roomconfig_roomname",
                    Some("text-single"),
                    Some("Name"),
                    &[&self.name],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_roomdesc",
                    Some("text-single"),
                    Some("Description"),
                    &[&self.description],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_lang",
                    Some("text-single"),
                    Some("Language"),
                    &[&self.language],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_persistentroom",
                    Some("boolean"),
                    Some("Keep the room when everyone has left"),
                    &[b(self.persistent)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_publicroom",
                    Some("boolean"),
                    Some("List the room in the directory"),
                    &[b(self.public)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_membersonly",
                    Some("boolean"),
                    Some("Only members may enter"),
                    &[b(self.members_only)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_moderatedroom",
                    Some("boolean"),
                    Some("Only participants with voice may speak"),
                    &[b(self.moderated)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_passwordprotectedroom",
                    Some("boolean"),
                    Some("Require a password to enter"),
                    &[b(!self.password.is_empty())],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_roomsecret",
                    Some("text-private"),
                    Some("Password"),
                    &[&self.password],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_whois",
                    Some("list-single"),
                    Some("Who may see members' addresses"),
                    &[if self.whois_anyone {
                        "anyone"
                    } else {
                        "moderators"
                    }],
                )
                .child(option("Moderators only", "moderators"))
                .child(option("Anyone", "anyone"))
                .build(),
            )
            .child(
                field(
                    "muc#maxhistoryfetch",
                    Some("text-single"),
                    Some(&format!(
                        "Messages sent to newcomers (at most {service_max_history})"
                    )),
                    &[&history],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_allowinvites",
                    Some("boolean"),
                    Some("Members may invite others"),
                    &[b(self.allow_invites)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_enablearchiving",
                    Some("boolean"),
                    Some("Keep a message archive"),
                    &[b(self.archiving)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_changesubject",
                    Some("boolean"),
                    Some("Participants may change the subject"),
                    &[b(self.change_subject)],
                )
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_allowpm",
                    Some("list-single"),
                    Some("Who may send private messages"),
                    &[self.allow_pm.as_str()],
                )
                .child(option("Anyone", "anyone"))
                .child(option("Participants", "participants"))
                .child(option("Moderators", "moderators"))
                .child(option("Nobody", "none"))
                .build(),
            )
            .child(
                field(
                    "muc#roomconfig_maxusers",
                    Some("text-single"),
                    Some(&format!("Most occupants (at most {service_max_users})")),
                    &[&max_users],
                )
                .build(),
            )
            .child({
                let roles: Vec<&str> = self.get_member_list.iter().map(String::as_str).collect();
                field(
                    "muc#roomconfig_getmemberlist",
                    Some("list-multi"),
                    Some("Roles that may see the member list"),
                    &roles,
                )
                .child(option("Moderator", "moderator"))
                .child(option("Participant", "participant"))
                .child(option("Visitor", "visitor"))
                .build()
            })
            .build()
    }

    /// Apply a submitted form over this configuration. Fields left out keep
    /// their values; a bad value is refused with `<not-acceptable/>` and
    /// changes nothing.
    pub fn apply(
        &self,
        x: &Element,
        service_max_users: usize,
        service_max_history: usize,
    ) -> Result<RoomConfig, StanzaError> {
        let mut c = self.clone();
        let mut password_protected = None;
        let bad = |var: &str| {
            StanzaError::new("modify", "not-acceptable").with_text(format!("bad value for {var}"))
        };
        for (var, values) in form::fields(x) {
            let first = values.first().map(String::as_str).unwrap_or("");
            let flag = || form::boolean(first).ok_or_else(|| bad(&var));
            match var.as_str() {
                "FORM_TYPE" if first != FORM_TYPE => {
                    return Err(StanzaError::new("modify", "not-acceptable")
                        .with_text("not a muc#roomconfig form"))
                }
                "muc#roomconfig_roomname" => {
                    c.name = bounded(first, 100).ok_or_else(|| bad(&var))?
                }
                "muc#roomconfig_roomdesc" => {
                    c.description = bounded(first, 1000).ok_or_else(|| bad(&var))?
                }
                "muc#roomconfig_lang" => {
                    c.language = bounded(first, 35).ok_or_else(|| bad(&var))?
                }
                "muc#roomconfig_persistentroom" => c.persistent = flag()?,
                "muc#roomconfig_publicroom" => c.public = flag()?,
                "muc#roomconfig_membersonly" => c.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => c.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => password_protected = Some(flag()?),
                "muc#roomconfig_roomsecret" => {
                    c.password = bounded(first, 256).ok_or_else(|| bad(&var))?
                }
                "muc#roomconfig_whois" => {
                    c.whois_anyone = match first {
                        "anyone" => true,
                        "moderators" => false,
                        _ => return Err(bad(&var)),
                    }
                }
                "muc#maxhistoryfetch" | "muc#roomconfig_historylength" => {
                    let n: usize = first.trim().parse().map_err(|_| bad(&var))?;
                    c.max_history = n.min(service_max_history);
                }
                "muc#roomconfig_allowinvites" => c.allow_invites = flag()?,
                "muc#roomconfig_enablearchiving" | "mam" => c.archiving = flag()?,
                "muc#roomconfig_changesubject" => c.change_subject = flag()?,
                "muc#roomconfig_allowpm" => {
                    c.allow_pm = AllowPm::parse(first).ok_or_else(|| bad(&var))?
                }
                "muc#roomconfig_maxusers" => {
                    let n: usize = match first.trim() {
                        "" | "none" => 0,
                        v => v.parse().map_err(|_| bad(&var))?,
                    };
                    c.max_users = if n == 0 || n >= service_max_users {
                        0
                    } else {
                        n
                    };
                }
                "muc#roomconfig_getmemberlist" => {
                    if values
                        .iter()
                        .any(|r| !matches!(r.as_str(), "moderator" | "participant" | "visitor"))
                    {
                        return Err(bad(&var));
                    }
                    c.get_member_list = values.clone();
                }
                _ => {}
            }
        }
        if password_protected == Some(false) {
            c.password.clear();
        } else if password_protected == Some(true) && c.password.is_empty() {
            return Err(StanzaError::new("modify", "not-acceptable")
                .with_text("a password-protected room needs a password"));
        }
        Ok(c)
    }

    /// The stored copy: the form as submitted.
    pub fn to_stored(&self) -> String {
        let mut form = self.to_form(usize::MAX, usize::MAX);
        crate::xml::attr_set(&mut form, "type", "submit");
        let mut out = Vec::new();
        crate::xml::serialize(&form, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Read a stored copy over the defaults (a damaged one gives the defaults).
    pub fn from_stored(s: &str) -> RoomConfig {
        let Ok(x) = s.parse::<Element>() else {
            tracing::warn!("a stored room configuration is unreadable; using defaults");
            return RoomConfig::default();
        };
        RoomConfig::default()
            .apply(&x, usize::MAX, usize::MAX)
            .unwrap_or_default()
    }
}

/// `s` if it is at most `max` characters.
fn bounded(s: &str, max: usize) -> Option<String> {
    (s.chars().count() <= max).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &[&str])]) -> Element {
        let mut x = el("x", NS_DATA).attr("type", "submit");
        x = x.child(form::form_type_field(FORM_TYPE));
        for (var, vals) in fields {
            x = x.child(field(var, None, None, vals).build());
        }
        x.build()
    }

    #[test]
    fn a_form_changes_only_what_it_names() {
        let c = RoomConfig::default()
            .apply(
                &submit(&[
                    ("muc#roomconfig_roomname", &["Family"]),
                    ("muc#roomconfig_membersonly", &["0"]),
                    ("muc#roomconfig_whois", &["moderators"]),
                    ("muc#maxhistoryfetch", &["500"]),
                ]),
                200,
                100,
            )
            .unwrap();
        assert_eq!(c.name, "Family");
        assert!(!c.members_only);
        assert!(!c.whois_anyone);
        assert_eq!(c.max_history, 100, "capped by the service");
        assert!(c.persistent && c.archiving);
    }

    #[test]
    fn bad_values_are_refused() {
        for (var, v) in [
            ("muc#roomconfig_persistentroom", "maybe"),
            ("muc#roomconfig_whois", "everyone"),
            ("muc#roomconfig_maxusers", "-1"),
            ("muc#roomconfig_allowpm", "cats"),
        ] {
            let e = RoomConfig::default()
                .apply(&submit(&[(var, &[v])]), 200, 100)
                .unwrap_err();
            assert_eq!(e.condition, "not-acceptable", "{var}");
        }
        let e = RoomConfig::default()
            .apply(
                &submit(&[("muc#roomconfig_passwordprotectedroom", &["1"])]),
                200,
                100,
            )
            .unwrap_err();
        assert_eq!(e.condition, "not-acceptable");
    }

    #[test]
    fn the_stored_copy_round_trips() {
        let mut c = RoomConfig {
            name: "Kitchen <&>".into(),
            password: "pw".into(),
            max_users: 7,
            allow_pm: AllowPm::Moderators,
            ..RoomConfig::default()
        };
        c.get_member_list = vec!["moderator".into()];
        assert_eq!(RoomConfig::from_stored(&c.to_stored()), c);
    }
}
