//! Incremental splitter of an XMPP stream into its top-level items.
//!
//! The generator never builds an XML tree: it only needs to know where the stream
//! header, each top-level stanza and the stream end are, and to pick a few attributes
//! and child texts out of stanzas it wrote the shape of itself. The scanner keeps its
//! position between reads, so every byte is looked at once.

use anyhow::{bail, Result};

/// One top-level item of an XMPP stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// The `<stream:stream ...>` opening tag.
    Header(String),
    /// A complete first-level element (`<message/>`, `<stream:features>` ...).
    Stanza(String),
    /// `</stream:stream>`.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    TagOpen,
    InTag { end: bool },
    InQuote { quote: u8, end: bool },
    Pi,
}

/// Buffers bytes read from the socket and cuts them into [`Item`]s.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    pos: usize,
    depth: u32,
    tag_start: usize,
    stanza_start: usize,
    prev: u8,
    state: State,
    max: usize,
}

impl Splitter {
    /// A splitter that refuses to buffer more than `max` bytes of one item.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            pos: 0,
            depth: 0,
            tag_start: 0,
            stanza_start: 0,
            prev: 0,
            state: State::Text,
            max,
        }
    }

    /// The buffer that the next socket read appends to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// True when no partial item is buffered (nothing may be lost by a TLS upgrade).
    pub fn is_empty(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }

    /// Scans buffered bytes and returns the next complete item, if there is one.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        while self.pos < self.buf.len() {
            let i = self.pos;
            let b = self.buf[i];
            self.pos += 1;
            match self.state {
                State::Text => {
                    if b == b'<' {
                        self.tag_start = i;
                        self.state = State::TagOpen;
                    }
                }
                State::TagOpen => match b {
                    b'/' => self.state = State::InTag { end: true },
                    b'?' => self.state = State::Pi,
                    b'!' => bail!("comments, CDATA and DTDs are not expected in XMPP"),
                    _ => self.state = State::InTag { end: false },
                },
                State::Pi => {
                    if b == b'>' && self.prev == b'?' {
                        self.state = State::Text;
                    }
                }
                State::InQuote { quote, end } => {
                    if b == quote {
                        self.state = State::InTag { end };
                    }
                }
                State::InTag { end } => match b {
                    b'\'' | b'"' => self.state = State::InQuote { quote: b, end },
                    b'>' => {
                        self.state = State::Text;
                        let self_closing = self.prev == b'/';
                        if let Some(item) = self.tag_closed(i, end, self_closing)? {
                            return Ok(Some(item));
                        }
                    }
                    _ => {}
                },
            }
            self.prev = b;
        }
        if self.buf.len() > self.max {
            bail!("an item exceeds {} bytes", self.max);
        }
        Ok(None)
    }

    /// Handles the `>` at `i` that closes a tag.
    fn tag_closed(&mut self, i: usize, end: bool, self_closing: bool) -> Result<Option<Item>> {
        self.prev = b'>';
        if end {
            match self.depth {
                0 => bail!("end tag outside the stream"),
                1 => {
                    self.depth = 0;
                    self.consume(i + 1);
                    return Ok(Some(Item::End));
                }
                2 => {
                    self.depth = 1;
                    let item = self.take(self.stanza_start, i + 1)?;
                    return Ok(Some(Item::Stanza(item)));
                }
                _ => self.depth -= 1,
            }
            return Ok(None);
        }
        match (self.depth, self_closing) {
            (0, true) => bail!("empty stream"),
            (0, false) => {
                self.depth = 1;
                let item = self.take(self.tag_start, i + 1)?;
                Ok(Some(Item::Header(item)))
            }
            (1, true) => {
                let item = self.take(self.tag_start, i + 1)?;
                Ok(Some(Item::Stanza(item)))
            }
            (1, false) => {
                self.stanza_start = self.tag_start;
                self.depth = 2;
                Ok(None)
            }
            (_, true) => Ok(None),
            (_, false) => {
                self.depth += 1;
                Ok(None)
            }
        }
    }

    /// Copies bytes `start..end` out and drops everything before `end`.
    fn take(&mut self, start: usize, end: usize) -> Result<String> {
        let text = std::str::from_utf8(&self.buf[start..end])
            .map_err(|e| anyhow::anyhow!("stream is not UTF-8: {e}"))?
            .to_owned();
        self.consume(end);
        Ok(text)
    }

    fn consume(&mut self, end: usize) {
        self.buf.drain(..end);
        self.pos = 0;
        self.tag_start = 0;
        self.stanza_start = 0;
    }
}

/// The qualified name of the root element of `stanza` (`stream:features`, `message`).
pub fn name(stanza: &str) -> &str {
    let rest = stanza.strip_prefix('<').unwrap_or(stanza);
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The value of attribute `attr` on the root element, as written (not unescaped).
pub fn attr<'a>(stanza: &'a str, attr: &str) -> Option<&'a str> {
    let head = &stanza[..stanza.find('>').unwrap_or(stanza.len())];
    let mut from = 0;
    while let Some(found) = head[from..].find(attr) {
        let at = from + found;
        from = at + attr.len();
        let before_ok = head[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let rest = head[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(quote) = rest.chars().next().filter(|q| *q == '\'' || *q == '"') else {
            continue;
        };
        if !before_ok {
            continue;
        }
        let value = &rest[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

/// The text content of the first element named `local` (without prefix) in `stanza`.
pub fn child_text<'a>(stanza: &'a str, local: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(found) = stanza[from..].find('<') {
        let at = from + found;
        from = at + 1;
        if name(&stanza[at..]) != local {
            continue;
        }
        let open_end = at + stanza[at..].find('>')?;
        if stanza[..open_end].ends_with('/') {
            return Some("");
        }
        let text = &stanza[open_end + 1..];
        return text.find('<').map(|end| &text[..end]);
    }
    None
}

/// The text content of the root element (SASL challenges and successes).
pub fn root_text(stanza: &str) -> &str {
    child_text(stanza, name(stanza)).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(input: &str, chunk: usize) -> Vec<Item> {
        let mut s = Splitter::new(1 << 16);
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(chunk) {
            s.buffer().extend_from_slice(part);
            while let Some(item) = s.next_item().expect("valid input") {
                out.push(item);
            }
        }
        out
    }

    #[test]
    fn splits_a_stream_in_any_chunking() {
        let input = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='a>b'>\
                     <stream:features><starttls xmlns='x'><required/></starttls></stream:features> \
                     <message to='u2@d' id=\"m/1\"><body>1 2</body></message><presence/></stream:stream>";
        for chunk in [1, 3, 7, input.len()] {
            let got = items(input, chunk);
            assert_eq!(got.len(), 5, "chunk {chunk}: {got:?}");
            assert_eq!(got[4], Item::End);
            let Item::Stanza(m) = &got[2] else {
                panic!("not a stanza")
            };
            assert_eq!(name(m), "message");
            assert_eq!(attr(m, "id"), Some("m/1"));
            assert_eq!(attr(m, "to"), Some("u2@d"));
            assert_eq!(child_text(m, "body"), Some("1 2"));
            assert_eq!(got[3], Item::Stanza("<presence/>".into()));
        }
    }

    #[test]
    fn root_text_and_prefixed_names() {
        let s = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1h</challenge>";
        assert_eq!(root_text(s), "cj1h");
        assert_eq!(name("<stream:features>"), "stream:features");
        assert_eq!(attr("<iq xid='1' id='2'/>", "id"), Some("2"));
    }

    #[test]
    fn refuses_oversized_items() {
        let mut s = Splitter::new(16);
        s.buffer()
            .extend_from_slice(b"<stream:stream><message><body>long long long");
        assert!(matches!(s.next_item(), Ok(Some(Item::Header(_)))));
        assert!(s.next_item().is_err());
    }
}
