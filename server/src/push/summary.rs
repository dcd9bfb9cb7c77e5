//! What a push notification says (XEP-0357 §7): which messages deserve one,
//! and the `<iq><pubsub><publish>…<notification/>…</publish>
//! <publish-options/></pubsub></iq>` sent to the app server, with the
//! `urn:xmpp:push:summary` form (message count, last sender, and the last
//! body only when the admin allowed it).

use minidom::Element;

use crate::xml::{el, ns};

pub const NS_PUSH: &str = "urn:xmpp:push:0";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_DATA: &str = "jabber:x:data";
const SUMMARY: &str = "urn:xmpp:push:summary";

/// Payloads that mean "a person wrote (or calls)" even without a `<body/>`:
/// OMEMO (legacy and 2), OpenPGP (legacy and XEP-0373), and Jingle call
/// proposals (XEP-0353).
const PUSH_WORTHY_PAYLOADS: [(&str, &str); 5] = [
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("x", "jabber:x:encrypted"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("propose", "urn:xmpp:jingle-message:0"),
];

/// Whether a message should wake the recipient's phone: a chat, normal or
/// group chat message (a room sends those only to its occupants) with a
/// non-empty body or an encrypted payload or a call proposal. Chat states,
/// receipts, markers, errors and headlines do not.
pub fn push_worthy(msg: &Element) -> bool {
    if !matches!(
        msg.attr("type").unwrap_or("normal"),
        "chat" | "normal" | "groupchat"
    ) {
        return false;
    }
    let body = msg
        .get_child("body", ns::CLIENT)
        .is_some_and(|b| !b.text().trim().is_empty());
    body || msg.children().any(|c| {
        PUSH_WORTHY_PAYLOADS
            .iter()
            .any(|(name, ns)| c.name() == *name && c.ns() == *ns)
    })
}

/// What the notification summarises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Push-worthy messages since the account was last online.
    pub count: u32,
    pub last_sender: String,
    /// Only kept when the admin enabled bodies in notifications.
    pub last_body: Option<String>,
}

fn field(var: &str, value: &str) -> Element {
    el("field", NS_DATA)
        .attr("var", var)
        .child(el("value", NS_DATA).text(value).build())
        .build()
}

/// The notification IQ from the account `from` to the app server.
pub fn notification(
    from: &str,
    app_server: &str,
    node: &str,
    summary: &Summary,
    options: Option<Element>,
) -> Element {
    let mut form = el("x", NS_DATA)
        .attr("type", "submit")
        .child(field("FORM_TYPE", SUMMARY))
        .child(field("message-count", &summary.count.to_string()))
        .child(field("last-message-sender", &summary.last_sender));
    if let Some(body) = &summary.last_body {
        form = form.child(field("last-message-body", body));
    }
    let publish = el("publish", NS_PUBSUB)
        .attr("node", node)
        .child(
            el("item", NS_PUBSUB)
                .child(el("notification", NS_PUSH).child(form.build()).build())
                .build(),
        )
        .build();
    let mut pubsub = el("pubsub", NS_PUBSUB).child(publish);
    if let Some(options) = options {
        pubsub = pubsub.child(el("publish-options", NS_PUBSUB).child(options).build());
    }
    el("iq", ns::CLIENT)
        .attr("type", "set")
        .attr("from", from)
        .attr("to", app_server)
        .child(pubsub.build())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: &str, child: Element) -> Element {
        el("message", ns::CLIENT)
            .attr("type", ty)
            .child(child)
            .build()
    }

    #[test]
    fn what_wakes_a_phone() {
        let body = el("body", ns::CLIENT).text("hi").build();
        assert!(push_worthy(&msg("chat", body.clone())));
        assert!(push_worthy(&msg("normal", body.clone())));
        assert!(!push_worthy(&msg("headline", body.clone())));
        assert!(push_worthy(&msg("groupchat", body)));
        assert!(!push_worthy(&msg(
            "chat",
            el("body", ns::CLIENT).text("  ").build()
        )));
        assert!(!push_worthy(&msg(
            "chat",
            Element::bare("composing", "http://jabber.org/protocol/chatstates")
        )));
        assert!(!push_worthy(&msg(
            "chat",
            Element::bare("received", "urn:xmpp:receipts")
        )));
        assert!(push_worthy(&msg(
            "chat",
            Element::bare("encrypted", "eu.siacs.conversations.axolotl")
        )));
    }

    #[test]
    fn the_body_is_only_there_when_kept() {
        let s = Summary {
            count: 2,
            last_sender: "bob@localhost/phone".into(),
            last_body: None,
        };
        let iq = notification("alice@localhost", "push.localhost", "n1", &s, None);
        let mut buf = Vec::new();
        crate::xml::serialize(&iq, &mut buf);
        let text = String::from_utf8(buf).expect("utf8");
        assert!(text.contains("message-count"), "{text}");
        assert!(!text.contains("last-message-body"), "{text}");
        assert!(!text.contains("publish-options"), "{text}");
    }
}
