//! What s2s streams look like on the wire: the stream header with the
//! `jabber:server` and dialback namespaces, stream errors, and moving stanzas
//! between the `jabber:client` namespace local sessions use and the
//! `jabber:server` namespace of s2s streams.

use minidom::{Element, Node};

use crate::stream::{StreamError, Transport, XmlStream};
use crate::xml::{escape, ns};

pub const NS_DIALBACK: &str = "jabber:server:dialback";
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
pub const NS_BIDI: &str = "urn:xmpp:bidi";
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";

/// Our stream header (`to` and `id` when known).
pub fn header(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{NS_DIALBACK}' version='1.0' from='{}'",
        ns::SERVER,
        ns::STREAM,
        escape(from)
    );
    if let Some(to) = to {
        h.push_str(&format!(" to='{}'", escape(to)));
    }
    if let Some(id) = id {
        h.push_str(&format!(" id='{}'", escape(id)));
    }
    h.push('>');
    h
}

/// Send a stream error and close (the header must already be out).
pub async fn fail<T: Transport>(stream: &mut XmlStream<T>, err: &StreamError) {
    let mut out = format!(
        "<stream:error><{} xmlns='{}'/>",
        err.condition,
        ns::STREAMS_ERR
    );
    if let Some(t) = &err.text {
        out.push_str(&format!(
            "<text xmlns='{}' xml:lang='en'>{}</text>",
            ns::STREAMS_ERR,
            escape(t)
        ));
    }
    out.push_str("</stream:error>");
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.write(out.as_bytes()),
    )
    .await;
    stream.close().await;
}

/// A copy of `el` with every element in namespace `from` moved to `to` (the
/// stanza and its default-namespace children such as `<body/>`).
pub fn renamespace(el: Element, from: &str, to: &str) -> Element {
    let mut el = el;
    let name = el.name().to_string();
    let target = if el.ns() == from {
        to.to_string()
    } else {
        el.ns()
    };
    let mut out = Element::bare(name, target);
    *out.attrs_mut() = el.attrs().clone();
    for node in el.take_nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(renamespace(child, from, to));
            }
            Node::Text(t) => out.append_text(t),
        }
    }
    out
}

/// A local stanza as it goes out on an s2s stream.
pub fn to_server(el: Element) -> Element {
    renamespace(el, ns::CLIENT, ns::SERVER)
}

/// A stanza from an s2s stream as local sessions see it.
pub fn to_client(el: Element) -> Element {
    renamespace(el, ns::SERVER, ns::CLIENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_moves_with_the_stanza_and_payloads_stay() {
        let m: Element = "<message xmlns='jabber:client' to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
            .parse()
            .unwrap();
        let s = to_server(m);
        assert_eq!(s.ns(), ns::SERVER);
        assert_eq!(s.attr("to"), Some("a@b"));
        assert_eq!(
            s.get_child("body", ns::SERVER).map(|b| b.text()),
            Some("hi".into())
        );
        assert!(s.get_child("x", "urn:x").is_some());
        let back = to_client(s);
        assert_eq!(
            back.get_child("body", ns::CLIENT).map(|b| b.text()),
            Some("hi".into())
        );
    }
}
