//! XMPP streams for message-framed transports: WebSocket (RFC 7395) and, on
//! top of the same framing, BOSH (XEP-0206).
//!
//! These transports carry one complete element per message and open/close the
//! stream with `<open/>` and `<close/>` in `urn:ietf:params:xml:ns:xmpp-framing`
//! instead of `<stream:stream>`. Rather than a second stream implementation,
//! a framed session is a translation layer *under* the one session engine:
//! the web pod hands client messages to [`FramedSender::send`], which rewrites
//! `<open/>`/`<close/>` into stream header/footer bytes; the engine (c2s
//! negotiation, SASL, bind, session loop, limits, stream errors) runs unchanged
//! on the other end of an in-process socket pair; and [`FramedReceiver::recv`]
//! splits what the engine writes back into one message per top-level element,
//! rewriting the header into `<open/>`, the footer into `<close/>`, declaring
//! the `stream` prefix on `<stream:features/>` and `<stream:error/>`, and
//! dropping whitespace keepalives (the web pod pings at the WebSocket level).
//!
//! The socket pair gives the engine a transport with the same readiness
//! semantics as TCP, and the kernel's socket buffers bound what is in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::Transport;
use crate::core::Core;
use crate::xml::{escape, ns};

/// The RFC 7395 framing namespace.
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// Largest element the engine may write that the splitter will buffer: the
/// session's stanza limit plus headroom (a server-built reply may be a bit
/// larger than what the client sent).
const MAX_OUT_ELEMENT: usize = 4 * 1024 * 1024;

impl Transport for UnixStream {
    async fn readable(&self) -> std::io::Result<()> {
        UnixStream::readable(self).await
    }
}

/// Why a framed message was refused.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The session is gone.
    #[error("the XMPP session is closed")]
    Closed,
}

/// The client-to-server half of a framed session.
pub struct FramedSender {
    io: OwnedWriteHalf,
}

/// The server-to-client half of a framed session.
pub struct FramedReceiver {
    io: OwnedReadHalf,
    buf: Vec<u8>,
}

/// Start a framed XMPP session for a client at `peer` whose transport is
/// already secured by the web pod (HTTPS). No channel binding is offered.
pub fn open(core: &Arc<Core>, peer: SocketAddr) -> std::io::Result<(FramedSender, FramedReceiver)> {
    let (ours, engine) = UnixStream::pair()?;
    tokio::spawn(super::c2s::serve_secured(core.clone(), engine, peer));
    let (r, w) = ours.into_split();
    Ok((
        FramedSender { io: w },
        FramedReceiver {
            io: r,
            buf: Vec::new(),
        },
    ))
}

impl FramedSender {
    /// Hand one client message (one element) to the session.
    pub async fn send(&mut self, message: &str) -> Result<(), FramedError> {
        let bytes = translate_in(message);
        self.io
            .write_all(bytes.as_bytes())
            .await
            .map_err(|_| FramedError::Closed)
    }

    /// Tell the session the client is gone.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

impl FramedReceiver {
    /// The next message for the client; `None` once the session has closed.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            match split_next(&mut self.buf) {
                Split::Message(m) => return Some(m),
                Split::Skip => continue,
                Split::Incomplete => {}
            }
            if self.buf.len() > MAX_OUT_ELEMENT {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A client message as stream bytes: `<open/>` becomes a stream header,
/// `<close/>` the stream footer, anything else passes through unchanged (the
/// stream parser checks it like any TCP input).
pub(crate) fn translate_in(message: &str) -> String {
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("<open") {
        if rest.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>') {
            let mut header = format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}'",
                ns::CLIENT,
                ns::STREAM
            );
            for (name, value) in attributes(rest) {
                if matches!(name, "to" | "from" | "version" | "xml:lang" | "id") {
                    header.push_str(&format!(" {name}='{}'", escape(&unescape(value))));
                }
            }
            header.push('>');
            return header;
        }
    }
    if let Some(rest) = m.strip_prefix("<close") {
        if rest.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>') {
            return "</stream:stream>".to_string();
        }
    }
    // RFC 7395 §3.3.3: one complete element per message. Anything else is
    // handed to the parser as a malformed fragment, so the engine answers
    // with `<not-well-formed/>` exactly as on TCP.
    if !m.starts_with('<') || element_end(m.as_bytes()) != Some(m.len()) {
        return "<>".to_string();
    }
    m.to_string()
}

/// The `name='value'` pairs of a start tag's remainder (after its name).
fn attributes(tag: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = tag;
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            break;
        };
        let Some(end) = after[1..].find(q) else { break };
        out.push((name, &after[1..1 + end]));
        rest = &after[end + 2..];
    }
    out
}

/// Undo the five predefined entities (attribute values are re-escaped).
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

pub(crate) enum Split {
    Message(String),
    Skip,
    Incomplete,
}

/// Take the next top-level item from what the engine wrote.
pub(crate) fn split_next(buf: &mut Vec<u8>) -> Split {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    if start > 0 {
        buf.drain(..start);
    }
    if buf.is_empty() {
        return Split::Incomplete;
    }
    let Some(end) = element_end(buf) else {
        return Split::Incomplete;
    };
    let item: Vec<u8> = buf.drain(..end).collect();
    let text = String::from_utf8_lossy(&item);
    if text.starts_with("<?") {
        return Split::Skip;
    }
    if text.starts_with("</stream:stream") {
        return Split::Message(format!("<close xmlns='{NS_FRAMING}'/>"));
    }
    if let Some(rest) = text.strip_prefix("<stream:stream") {
        let mut open = format!("<open xmlns='{NS_FRAMING}'");
        for (name, value) in attributes(rest.trim_end_matches('>')) {
            if !name.starts_with("xmlns") {
                open.push_str(&format!(" {name}='{value}'"));
            }
        }
        open.push_str("/>");
        return Split::Message(open);
    }
    for prefixed in ["<stream:features", "<stream:error"] {
        if let Some(rest) = text.strip_prefix(prefixed) {
            return Split::Message(format!("{prefixed} xmlns:stream='{}'{rest}", ns::STREAM));
        }
    }
    Split::Message(text.into_owned())
}

/// Where the first top-level item in `buf` ends (exclusive), if complete. The
/// stream header counts as an item by itself. Input is the engine's own
/// well-formed output, so a small scanner suffices.
fn element_end(buf: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != b'<' {
            i += 1;
            continue;
        }
        let close = tag_end(buf, i)?;
        let tag = &buf[i..=close];
        if tag.starts_with(b"<?") || tag.starts_with(b"<!") {
            if depth == 0 {
                return Some(close + 1);
            }
        } else if tag.starts_with(b"</") {
            if depth <= 1 {
                return Some(close + 1);
            }
            depth -= 1;
        } else if tag.ends_with(b"/>") {
            if depth == 0 {
                return Some(close + 1);
            }
        } else if depth == 0 && tag.starts_with(b"<stream:stream") {
            return Some(close + 1);
        } else {
            depth += 1;
        }
        i = close + 1;
    }
    None
}

/// Index of the `>` closing the tag that starts at `start`, minding quotes.
fn tag_end(buf: &[u8], start: usize) -> Option<usize> {
    let mut quote = None;
    for (k, &b) in buf.iter().enumerate().skip(start + 1) {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return Some(k),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &str) -> Vec<String> {
        let mut buf = bytes.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            match split_next(&mut buf) {
                Split::Message(m) => out.push(m),
                Split::Skip => {}
                Split::Incomplete => return out,
            }
        }
    }

    #[test]
    fn open_and_close_become_stream_header_and_footer() {
        let h = translate_in(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to=\"localhost\" version='1.0'/>",
        );
        assert!(h.starts_with("<stream:stream xmlns='jabber:client'"), "{h}");
        assert!(
            h.contains(" to='localhost'") && h.ends_with("version='1.0'>"),
            "{h}"
        );
        assert_eq!(
            translate_in("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            "</stream:stream>"
        );
        assert_eq!(translate_in(" <message/> "), "<message/>");
        assert_eq!(translate_in("<opening/>"), "<opening/>");
        assert_eq!(translate_in("<a><b/></a>"), "<a><b/></a>");
        // Not exactly one element: refused as malformed.
        assert_eq!(translate_in("<message><body>"), "<>");
        assert_eq!(translate_in("<a/><b/>"), "<>");
        assert_eq!(translate_in("text"), "<>");
    }

    #[test]
    fn engine_output_is_split_into_framed_messages() {
        let out = all(concat!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' ",
            "xmlns:stream='http://etherx.jabber.org/streams' id='ab' from='localhost' version='1.0' xml:lang='en'>",
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            " <message xmlns='jabber:client' to='a@b'><body>x &gt; y '&quot;</body><x a='>'/></message>",
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
        ));
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(
            out[0],
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='ab' from='localhost' version='1.0' xml:lang='en'/>"
        );
        assert!(out[1].starts_with(
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms"
        ));
        assert!(out[2].starts_with("<message") && out[2].ends_with("</message>"));
        assert!(out[3].starts_with("<stream:error xmlns:stream="));
        assert_eq!(
            out[4],
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );
    }

    #[test]
    fn a_partial_element_waits_for_the_rest() {
        let mut buf = b"<message><body>hal".to_vec();
        assert!(matches!(split_next(&mut buf), Split::Incomplete));
        buf.extend_from_slice(b"lo</body></message>");
        assert!(matches!(split_next(&mut buf), Split::Message(_)));
        assert!(buf.is_empty());
    }
}
