//! XEP-0280 Message Carbons: a session that enables carbons gets a copy of the
//! chats its account's other devices send (`<sent/>`) and receive
//! (`<received/>`), so every device shows the whole conversation. Eligibility
//! follows XEP-0280 §6 and the XEP-0334 `<no-copy/>` hint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use jid::Jid;
use minidom::Element;

use crate::core::Core;
use crate::registry::{FeatureScope, IqCtx, Module, Registry};
use crate::router::Addr;
use crate::session::SessionHandle;
use crate::xml::{el, ns};

pub const MODULE: Module = Module {
    name: "carbons",
    register,
};
const NS: &str = "urn:xmpp:carbons:2";
const NS_RULES: &str = "urn:xmpp:carbons:rules:0";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";

fn register(r: &mut Registry) {
    r.iq(true, Addr::SelfBare, NS, "enable", |cx| toggle(cx, true));
    r.iq(true, Addr::SelfBare, NS, "disable", |cx| toggle(cx, false));
    r.feature(FeatureScope::Host, NS);
    r.feature(FeatureScope::Host, NS_RULES);
    r.message_hook(copy);
    // Bind2 (XEP-0386): `<enable/>` inside `<bind/>` turns carbons on at login.
    r.bind2_inline(NS, |_, _, req| crate::registry::Bind2Outcome {
        bound: None,
        effect: (req.name() == "enable").then(|| -> crate::registry::SessionEffect {
            Box::new(|_, s| s.carbons.store(true, Ordering::Relaxed))
        }),
    });
}

fn toggle(cx: IqCtx<'_>, on: bool) -> crate::registry::BoxFuture<'_, crate::registry::IqResult> {
    cx.session.carbons.store(on, Ordering::Relaxed);
    Box::pin(async { Ok(None) })
}

/// XEP-0280 §6: chats, normal messages with a body, and errors are copied;
/// group chats, headlines, private and no-copy messages, and carbons are not.
fn eligible(msg: &Element) -> bool {
    let kind_ok = match msg.attr("type").unwrap_or("normal") {
        "chat" | "error" => true,
        "normal" => msg.has_child("body", ns::CLIENT),
        _ => false,
    };
    kind_ok
        && !msg.has_child("private", NS)
        && !msg.has_child("no-copy", NS_HINTS)
        && !msg.has_child("sent", NS)
        && !msg.has_child("received", NS)
}

fn wrap(direction: &str, msg: &Element, from: &str, to: &str) -> Element {
    el("message", ns::CLIENT)
        .attr("from", from)
        .attr("to", to)
        .attr("type", msg.attr("type").unwrap_or("normal"))
        .child(
            el(direction, NS)
                .child(el("forwarded", NS_FORWARD).child(msg.clone()).build())
                .build(),
        )
        .build()
}

fn wants(s: &SessionHandle) -> bool {
    s.carbons.load(Ordering::Relaxed)
}

/// Send the copies for one handled message.
fn copy(core: &Core, sender: &SessionHandle, msg: &Element, delivered: &[Arc<SessionHandle>]) {
    if !eligible(msg) {
        return;
    }
    let own = sender.jid.to_bare();
    for s in core.sessions.of(&own) {
        if s.id != sender.id && wants(&s) && !delivered.iter().any(|d| d.id == s.id) {
            s.send(wrap("sent", msg, own.as_str(), s.jid.as_str()));
        }
    }
    let Some(to) = msg.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    if to.domain().as_str() != core.domain || to.node().is_none() {
        return;
    }
    let recipient = to.to_bare();
    if recipient == own {
        return; // the sent copies above already reached every other own device
    }
    for s in core.sessions.of(&recipient) {
        if wants(&s) && !delivered.iter().any(|d| d.id == s.id) {
            s.send(wrap("received", msg, recipient.as_str(), s.jid.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: &str, children: Vec<Element>) -> Element {
        el("message", ns::CLIENT)
            .attr("type", ty)
            .children(children)
            .build()
    }

    #[test]
    fn eligibility_follows_xep0280_section_6() {
        let body = || el("body", ns::CLIENT).text("hi").build();
        assert!(eligible(&msg("chat", vec![])));
        assert!(eligible(&msg("normal", vec![body()])));
        assert!(!eligible(&msg("normal", vec![])));
        assert!(!eligible(&msg("groupchat", vec![body()])));
        assert!(!eligible(&msg("headline", vec![body()])));
        assert!(!eligible(&msg("chat", vec![Element::bare("private", NS)])));
        assert!(!eligible(&msg(
            "chat",
            vec![Element::bare("no-copy", NS_HINTS)]
        )));
        assert!(!eligible(&msg("chat", vec![Element::bare("sent", NS)])));
    }

    #[test]
    fn copies_wrap_the_original() {
        let m = msg("chat", vec![el("body", ns::CLIENT).text("hi").build()]);
        let w = wrap("received", &m, "bob@x", "bob@x/laptop");
        let inner = w
            .get_child("received", NS)
            .and_then(|r| r.get_child("forwarded", NS_FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .expect("forwarded message");
        assert_eq!(inner, &m);
        assert_eq!(
            (w.attr("from"), w.attr("to")),
            (Some("bob@x"), Some("bob@x/laptop"))
        );
    }
}
