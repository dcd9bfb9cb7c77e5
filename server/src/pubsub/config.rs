//! A PEP node's configuration (XEP-0060 §16.4 `pubsub#node_config`) and the
//! data forms that set it: node creation and configuration, and XEP-0223
//! publish-options with their precondition rule (XEP-0060 §7.1.5).
//!
//! Supported fields: `pubsub#access_model` (open, presence, roster,
//! whitelist), `pubsub#max_items` (1 to the configured bound, or `max`),
//! `pubsub#persist_items`, `pubsub#send_last_published_item` (never, on_sub,
//! on_sub_and_presence) and `pubsub#roster_groups_allowed`. Other fields are
//! accepted and ignored, so clients that send extra options still work.

use minidom::Element;

use crate::stanza::StanzaError;
use crate::storage::pubsub::NodeRow;
use crate::xml::el;

pub const NS_DATA: &str = "jabber:x:data";
pub const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// Who may see a node's items (XEP-0060 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Open,
    /// Contacts subscribed to the owner's presence (the PEP default).
    Presence,
    /// Contacts in the allowed roster groups.
    Roster,
    /// The owner only (Kith keeps no other whitelist entries).
    Whitelist,
}

impl Access {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Access::Open,
            "presence" => Access::Presence,
            "roster" => Access::Roster,
            "whitelist" => Access::Whitelist,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
        }
    }
}

/// When the last item goes out without being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub access: Access,
    pub max_items: u32,
    pub persist: bool,
    pub send_last: SendLast,
    pub roster_groups: Vec<String>,
}

impl Default for NodeConfig {
    /// The PEP defaults (XEP-0163 §4.6.2): presence access, one item,
    /// persistent, last item sent on presence.
    fn default() -> Self {
        NodeConfig {
            access: Access::Presence,
            max_items: 1,
            persist: true,
            send_last: SendLast::OnSubAndPresence,
            roster_groups: Vec::new(),
        }
    }
}

/// The fields of a submitted form: (var, values), FORM_TYPE left out.
pub type Fields = Vec<(String, Vec<String>)>;

/// Read a `jabber:x:data` form of type submit (or a bare form, as some
/// clients send in publish-options).
pub fn parse_form(x: &Element) -> Result<Fields, StanzaError> {
    if !x.is("x", NS_DATA) {
        return Err(StanzaError::bad_request().with_text("expected a jabber:x:data form"));
    }
    if matches!(x.attr("type"), Some("cancel")) {
        return Ok(Vec::new());
    }
    Ok(x.children()
        .filter(|f| f.is("field", NS_DATA))
        .filter_map(|f| {
            let var = f.attr("var")?;
            (var != "FORM_TYPE").then(|| {
                (
                    var.to_string(),
                    f.children()
                        .filter(|v| v.is("value", NS_DATA))
                        .map(|v| v.text().trim().to_string())
                        .collect(),
                )
            })
        })
        .collect())
}

fn not_acceptable(text: String) -> StanzaError {
    StanzaError::new("modify", "not-acceptable").with_text(text)
}

fn parse_bool(var: &str, v: &str) -> Result<bool, StanzaError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(not_acceptable(format!("{var}: '{v}' is not a boolean"))),
    }
}

impl NodeConfig {
    /// Apply submitted fields. `bound` is the most items a node may keep.
    pub fn apply(&mut self, fields: &Fields, bound: usize) -> Result<(), StanzaError> {
        for (var, values) in fields {
            let first = values.first().map(String::as_str).unwrap_or("");
            match var.as_str() {
                "pubsub#access_model" => {
                    self.access = Access::parse(first).ok_or_else(|| {
                        not_acceptable(format!("pubsub#access_model: '{first}' is not supported"))
                    })?
                }
                "pubsub#max_items" => {
                    let bound = bound.clamp(1, u32::MAX as usize) as u32;
                    self.max_items = match first {
                        "max" => bound,
                        n => match n.parse::<u32>() {
                            // Above the server's bound means "as many as allowed"
                            // (Converse.js asks 9999 for its bookmarks).
                            Ok(n) if n >= 1 => n.min(bound),
                            _ => {
                                return Err(not_acceptable(format!(
                                    "pubsub#max_items: '{n}' is not a number from 1 or 'max'"
                                )))
                            }
                        },
                    }
                }
                "pubsub#persist_items" => self.persist = parse_bool(var, first)?,
                "pubsub#send_last_published_item" => {
                    self.send_last = SendLast::parse(first).ok_or_else(|| {
                        not_acceptable(format!(
                            "pubsub#send_last_published_item: '{first}' is not supported"
                        ))
                    })?
                }
                "pubsub#roster_groups_allowed" => {
                    let mut g: Vec<String> =
                        values.iter().filter(|v| !v.is_empty()).cloned().collect();
                    g.sort();
                    g.dedup();
                    self.roster_groups = g;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// XEP-0060 §7.1.5: do publish-options agree with this existing node?
    /// Invalid options are an error; options that differ fail the precondition.
    pub fn check_precondition(&self, fields: &Fields, bound: usize) -> Result<(), StanzaError> {
        let mut want = self.clone();
        want.apply(fields, bound)?;
        if want != *self {
            return Err(StanzaError::new("cancel", "conflict")
                .with_app("precondition-not-met", super::NS_ERRORS)
                .with_text("the node exists with a different configuration"));
        }
        Ok(())
    }

    /// The configuration form (XEP-0060 §8.2).
    pub fn to_form(&self, bound: usize) -> Element {
        let field = |var: &str, ty: &str, values: Vec<String>, options: &[&str]| {
            el("field", NS_DATA)
                .attr("var", var)
                .attr("type", ty)
                .children(
                    options
                        .iter()
                        .map(|o| el("option", NS_DATA).child(value(o)).build()),
                )
                .children(values.iter().map(|v| value(v)))
                .build()
        };
        fn value(v: &str) -> Element {
            el("value", NS_DATA).text(v).build()
        }
        el("x", NS_DATA)
            .attr("type", "form")
            .child(field(
                "FORM_TYPE",
                "hidden",
                vec![NS_NODE_CONFIG.into()],
                &[],
            ))
            .child(field(
                "pubsub#access_model",
                "list-single",
                vec![self.access.as_str().into()],
                &["open", "presence", "roster", "whitelist"],
            ))
            .child(field(
                "pubsub#max_items",
                "text-single",
                vec![self.max_items.to_string()],
                &[],
            ))
            .child(field(
                "pubsub#persist_items",
                "boolean",
                vec![if self.persist { "1" } else { "0" }.into()],
                &[],
            ))
            .child(field(
                "pubsub#send_last_published_item",
                "list-single",
                vec![self.send_last.as_str().into()],
                &["never", "on_sub", "on_sub_and_presence"],
            ))
            .child(field(
                "pubsub#roster_groups_allowed",
                "list-multi",
                self.roster_groups.clone(),
                &[],
            ))
            .child(
                el("field", NS_DATA)
                    .attr("var", "pubsub#max_items_bound")
                    .attr("type", "fixed")
                    .child(value(&format!("at most {bound} items")))
                    .build(),
            )
            .build()
    }

    pub fn to_row(&self) -> NodeRow {
        NodeRow {
            access_model: self.access.as_str().into(),
            max_items: self.max_items,
            persist_items: self.persist,
            send_last: self.send_last.as_str().into(),
            roster_groups: self.roster_groups.clone(),
        }
    }

    pub fn from_row(r: &NodeRow) -> Self {
        let d = NodeConfig::default();
        NodeConfig {
            access: Access::parse(&r.access_model).unwrap_or(d.access),
            max_items: r.max_items,
            persist: r.persist_items,
            send_last: SendLast::parse(&r.send_last).unwrap_or(d.send_last),
            roster_groups: r.roster_groups.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(var: &str, v: &str) -> (String, Vec<String>) {
        (var.to_string(), vec![v.to_string()])
    }

    #[test]
    fn options_apply_and_max_means_the_bound() {
        let mut c = NodeConfig::default();
        c.apply(
            &vec![
                f("pubsub#access_model", "open"),
                f("pubsub#max_items", "max"),
                f("pubsub#persist_items", "true"),
                f("pubsub#unknown", "x"),
            ],
            50,
        )
        .expect("valid");
        assert_eq!((c.access, c.max_items, c.persist), (Access::Open, 50, true));
        let mut over = c.clone();
        over.apply(&vec![f("pubsub#max_items", "9999")], 50)
            .expect("over the bound is the bound");
        assert_eq!(over.max_items, 50);
        assert!(over
            .check_precondition(&vec![f("pubsub#max_items", "9999")], 50)
            .is_ok());
        let e = c
            .clone()
            .apply(&vec![f("pubsub#max_items", "0")], 50)
            .expect_err("zero items");
        assert_eq!(e.condition, "not-acceptable");
        assert!(c
            .clone()
            .apply(&vec![f("pubsub#access_model", "authorize")], 50)
            .is_err());
    }

    #[test]
    fn precondition_fails_on_a_different_value_only() {
        let c = NodeConfig::default();
        assert!(c
            .check_precondition(&vec![f("pubsub#access_model", "presence")], 10)
            .is_ok());
        let e = c
            .check_precondition(&vec![f("pubsub#access_model", "open")], 10)
            .expect_err("differs");
        assert_eq!(
            (e.kind, e.condition, e.app.map(|a| a.0)),
            ("cancel", "conflict", Some("precondition-not-met"))
        );
    }
}
