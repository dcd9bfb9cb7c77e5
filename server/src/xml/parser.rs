//! The stream parser: bytes in, stream frames out, with hard limits.
//!
//! XMPP is one long XML document whose root is `<stream:stream>` and whose
//! children are stanzas. `rxml` enforces restricted XML (RFC 6120 §11.1: no DTD,
//! entity declarations, processing instructions or comments) and namespace
//! well-formedness; this type adds what the wire needs on top:
//!
//! * at most `stanza_bytes` bytes for one top-level element — counted on the
//!   bytes consumed, so an oversize stanza is refused while it streams in,
//!   never buffered whole;
//! * at most `depth` levels of nesting and `attributes` attributes per element;
//! * text between stanzas must be whitespace (keepalives).
//!
//! Input is fed in small slices so that no single parser step can take more
//! than a slice past a limit.

use minidom::Element;
use rxml::{Event, Namespace, Parse, Parser, WithOptions};

use super::ns;

/// Bytes handed to the parser in one step; bounds overshoot past a limit.
const STEP: usize = 2048;

/// Longest name, attribute value or text token (a longer text is split into
/// several tokens; a longer name or value is refused).
const TOKEN_BYTES: usize = 8 * 1024;

/// Largest stream header (`<?xml …?><stream:stream …>`): a real one is a few
/// hundred bytes; everything before it completes is counted against this.
pub const HEADER_BYTES: usize = 4096;

/// The limits a parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct ParserLimits {
    pub stanza_bytes: usize,
    pub depth: usize,
    pub attributes: usize,
}

/// What a parsed stream yields.
#[derive(Debug)]
pub enum Frame {
    /// `<stream:stream …>` was opened.
    Open(StreamHeader),
    /// A complete top-level element (a stanza or a negotiation element).
    Stanza(Element),
    /// `</stream:stream>`.
    Close,
}

/// Attributes of the stream header the server cares about.
#[derive(Debug, Clone, Default)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    /// The stream id the peer assigned (s2s dialback keys are bound to it).
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

/// Why a stream cannot continue; each maps to one RFC 6120 §4.9.3 condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    RestrictedXml(String),
    #[error("invalid UTF-8")]
    UnsupportedEncoding,
    #[error("{0}")]
    PolicyViolation(String),
    #[error("stream element has the wrong name or namespace")]
    InvalidNamespace,
    /// The memory shared by all unauthenticated peers is used up.
    #[error("the server is busy with other unauthenticated connections; try again later")]
    Busy,
}

impl ParseError {
    /// The stream error condition element name (RFC 6120 §4.9.3).
    pub fn condition(&self) -> &'static str {
        match self {
            ParseError::NotWellFormed(_) => "not-well-formed",
            ParseError::RestrictedXml(_) => "restricted-xml",
            ParseError::UnsupportedEncoding => "unsupported-encoding",
            ParseError::PolicyViolation(_) => "policy-violation",
            ParseError::InvalidNamespace => "invalid-namespace",
            ParseError::Busy => "resource-constraint",
        }
    }
}

impl From<rxml::Error> for ParseError {
    fn from(e: rxml::Error) -> Self {
        match e {
            // A name, attribute value or text token over the parser's token
            // limit is a size limit (RFC 6120 §4.9.3.14), not restricted XML.
            rxml::Error::RestrictedXml(what) if what.contains("long") => {
                ParseError::PolicyViolation(format!("XML token longer than {TOKEN_BYTES} bytes"))
            }
            rxml::Error::RestrictedXml(what) => ParseError::RestrictedXml(what.to_string()),
            rxml::Error::UndeclaredEntity => {
                ParseError::RestrictedXml("entity references are not allowed".into())
            }
            rxml::Error::InvalidUtf8Byte(_) => ParseError::UnsupportedEncoding,
            // `<!` that opens neither CDATA nor a comment is a markup
            // declaration (DOCTYPE, ENTITY, ...): forbidden by restricted XML.
            rxml::Error::InvalidSyntax(what) if what.contains("cdata or comment") => {
                ParseError::RestrictedXml("DTDs and markup declarations are not allowed".into())
            }
            other => ParseError::NotWellFormed(other.to_string()),
        }
    }
}

/// Incremental parser for one XML stream (reset it after STARTTLS and SASL).
pub struct StreamParser {
    parser: Parser,
    limits: ParserLimits,
    /// Open elements below the stream root; the first is the stanza being built.
    stack: Vec<Element>,
    /// Whether `<stream:stream>` was seen.
    opened: bool,
    /// Bytes consumed since the current top-level element began.
    stanza_bytes: usize,
}

impl StreamParser {
    /// A parser for a new stream.
    pub fn new(limits: ParserLimits) -> Self {
        StreamParser {
            parser: new_rxml(),
            limits,
            stack: Vec::new(),
            opened: false,
            stanza_bytes: 0,
        }
    }

    /// Start over for a new stream on the same connection (after TLS or SASL).
    pub fn reset(&mut self) {
        self.parser = new_rxml();
        self.stack.clear();
        self.opened = false;
        self.stanza_bytes = 0;
    }

    /// Change the limits, e.g. once the peer has authenticated.
    pub fn set_limits(&mut self, limits: ParserLimits) {
        self.limits = limits;
    }

    /// Give back spare capacity (for long idle periods).
    pub fn shrink(&mut self) {
        self.stack.shrink_to_fit();
        self.parser.release_temporaries();
    }

    /// Whether the stream header has been seen.
    pub fn is_open(&self) -> bool {
        self.opened
    }

    /// Feed received bytes; complete frames are appended to `out`. After an error
    /// the parser must not be fed again.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Frame>) -> Result<(), ParseError> {
        for step in data.chunks(STEP) {
            let mut buf = step;
            loop {
                let before = buf;
                let result = self.parser.parse(&mut buf, false);
                let consumed = &before[..before.len() - buf.len()];
                // Whitespace between stanzas (keepalives) does not count; the
                // next stanza counts from its first byte.
                let idle = self.stack.is_empty() && self.stanza_bytes == 0;
                if !(idle
                    && consumed
                        .iter()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')))
                {
                    self.stanza_bytes += consumed.len();
                }
                if !self.stack.is_empty() && self.stanza_bytes > self.limits.stanza_bytes {
                    return Err(self.too_large());
                }
                match result {
                    Ok(Some(event)) => self.event(event, out)?,
                    Ok(None) => break,
                    Err(rxml::error::EndOrError::NeedMoreData) => break,
                    Err(rxml::error::EndOrError::Error(e)) => return Err(e.into()),
                }
            }
            // A partially received start tag (huge attribute list, say) has not
            // produced an event yet but still counts: against the stanza, or,
            // before `<stream:stream …>` is complete, against the header.
            if self.stanza_bytes > self.limit() {
                return Err(self.too_large());
            }
        }
        // rxml reserves a token-sized scratch buffer whenever it starts a token;
        // give it back while the peer is quiet, so idle sessions stay small.
        self.parser.release_temporaries();
        Ok(())
    }

    /// Bytes the element being received may take: a stanza, or the header.
    fn limit(&self) -> usize {
        if self.opened {
            self.limits.stanza_bytes
        } else {
            HEADER_BYTES.min(self.limits.stanza_bytes)
        }
    }

    /// Bytes held for the element being received (the partial stanza or header).
    pub fn pending_bytes(&self) -> usize {
        self.stanza_bytes
    }

    fn too_large(&self) -> ParseError {
        if !self.opened {
            return ParseError::PolicyViolation(format!(
                "stream header larger than {} bytes",
                self.limit()
            ));
        }
        ParseError::PolicyViolation(format!(
            "stanza larger than {} bytes",
            self.limits.stanza_bytes
        ))
    }

    fn event(&mut self, event: Event, out: &mut Vec<Frame>) -> Result<(), ParseError> {
        match event {
            Event::XmlDeclaration(..) => {}
            Event::StartElement(_, (namespace, name), attrs) => {
                if !self.opened {
                    if name.as_str() != "stream" || namespace.as_str() != ns::STREAM {
                        return Err(ParseError::InvalidNamespace);
                    }
                    self.opened = true;
                    self.stanza_bytes = 0;
                    let get = |n: &str| attrs.get(&Namespace::NONE, n).map(|v| v.to_string());
                    out.push(Frame::Open(StreamHeader {
                        to: get("to"),
                        from: get("from"),
                        id: get("id"),
                        version: get("version"),
                        lang: attrs.get(Namespace::xml(), "lang").map(|v| v.to_string()),
                    }));
                    return Ok(());
                }
                if self.stack.len() + 1 > self.limits.depth {
                    return Err(ParseError::PolicyViolation(format!(
                        "elements nested deeper than {}",
                        self.limits.depth
                    )));
                }
                if attrs.len() > self.limits.attributes {
                    return Err(ParseError::PolicyViolation(format!(
                        "more than {} attributes on one element",
                        self.limits.attributes
                    )));
                }
                let mut el = Element::bare(name.as_str(), namespace.as_str());
                *el.attrs_mut() = attrs;
                self.stack.push(el);
            }
            Event::Text(_, text) => match self.stack.last_mut() {
                Some(top) => top.append_text(text),
                None => {
                    if !text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
                        return Err(ParseError::NotWellFormed("text outside of a stanza".into()));
                    }
                    // Whitespace keepalive between stanzas.
                    self.stanza_bytes = 0;
                }
            },
            Event::EndElement(_) => match self.stack.pop() {
                Some(done) => match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(done);
                    }
                    None => {
                        self.stanza_bytes = 0;
                        self.parser.release_temporaries();
                        out.push(Frame::Stanza(done));
                    }
                },
                None => out.push(Frame::Close),
            },
        }
        Ok(())
    }
}

/// Parse one whole element from untrusted bytes (a BOSH `<body/>`, say) with
/// the same parser and limits as a stream: `limits.stanza_bytes` bounds the
/// element, `depth` its nesting (the element itself is depth 1), `attributes`
/// each element's attributes. An XML declaration may come first; after the
/// element only whitespace may follow. Never builds a tree deeper than `depth`,
/// so serialising or dropping the result cannot exhaust the stack.
pub fn parse_element(data: &[u8], limits: ParserLimits) -> Result<Element, ParseError> {
    const WRAP: &[u8] = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    let mut rest = data;
    let trimmed = data.trim_ascii_start();
    if trimmed.starts_with(b"<?xml") {
        let end = trimmed
            .windows(2)
            .position(|w| w == b"?>")
            .filter(|&e| e < HEADER_BYTES)
            .ok_or_else(|| ParseError::NotWellFormed("unterminated XML declaration".into()))?;
        p.feed(&trimmed[..end + 2], &mut out)?;
        rest = &trimmed[end + 2..];
    }
    p.feed(WRAP, &mut out)?;
    out.clear();
    p.feed(rest, &mut out)?;
    let mut frames = out.into_iter();
    match (frames.next(), frames.next()) {
        (Some(Frame::Stanza(el)), None) if p.pending_bytes() == 0 => Ok(el),
        (Some(Frame::Stanza(_)), Some(_)) => {
            Err(ParseError::NotWellFormed("more than one element".into()))
        }
        (Some(Frame::Close), _) => Err(ParseError::NotWellFormed("unexpected end tag".into())),
        _ => Err(ParseError::NotWellFormed("incomplete element".into())),
    }
}

fn new_rxml() -> Parser {
    Parser::with_options(rxml::Options {
        max_token_length: TOKEN_BYTES,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
        xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

    fn limits() -> ParserLimits {
        ParserLimits {
            stanza_bytes: 1024,
            depth: 8,
            attributes: 4,
        }
    }

    fn feed_all(p: &mut StreamParser, data: &[u8]) -> Result<Vec<Frame>, ParseError> {
        let mut out = Vec::new();
        p.feed(data, &mut out)?;
        Ok(out)
    }

    fn opened() -> StreamParser {
        let mut p = StreamParser::new(limits());
        let frames = feed_all(&mut p, OPEN).expect("header parses");
        assert!(matches!(&frames[..], [Frame::Open(h)] if h.to.as_deref() == Some("localhost")));
        p
    }

    #[test]
    fn stanzas_split_across_reads_come_out_whole() {
        let mut p = opened();
        let msg = b"<message to='a@b'><body>hi &amp; bye</body></message> ";
        let mut frames = Vec::new();
        for byte in msg.chunks(3) {
            p.feed(byte, &mut frames).expect("valid");
        }
        let [Frame::Stanza(m)] = &frames[..] else {
            panic!("one stanza, got {frames:?}")
        };
        assert_eq!(m.name(), "message");
        assert_eq!(m.ns(), "jabber:client");
        assert_eq!(m.attr("to"), Some("a@b"));
        assert_eq!(
            m.get_child("body", "jabber:client").map(|b| b.text()),
            Some("hi & bye".into())
        );
    }

    #[test]
    fn stream_close_is_reported() {
        let mut p = opened();
        let frames = feed_all(&mut p, b"<presence/></stream:stream>").expect("valid");
        assert!(matches!(&frames[..], [Frame::Stanza(_), Frame::Close]));
    }

    #[test]
    fn doctype_is_restricted_xml() {
        let mut p = StreamParser::new(limits());
        let bomb = b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><stream:stream>";
        let r = feed_all(&mut p, bomb);
        assert!(matches!(r, Err(ParseError::RestrictedXml(_))), "{r:?}");
    }

    #[test]
    fn entity_reference_is_restricted_xml() {
        let mut p = opened();
        let err = feed_all(&mut p, b"<message><body>&lol;</body></message>").unwrap_err();
        assert_eq!(err.condition(), "restricted-xml");
    }

    #[test]
    fn comments_and_processing_instructions_are_restricted_xml() {
        let mut p = opened();
        assert_eq!(
            feed_all(&mut p, b"<!-- hi -->").unwrap_err().condition(),
            "restricted-xml"
        );
        let mut p = opened();
        assert_eq!(
            feed_all(&mut p, b"<?pi x?>").unwrap_err().condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn oversize_stanza_is_refused_while_streaming() {
        let mut p = opened();
        let mut out = Vec::new();
        p.feed(b"<message><body>", &mut out).expect("start is fine");
        let chunk = vec![b'a'; 512];
        let mut fed = 0;
        let err = loop {
            match p.feed(&chunk, &mut out) {
                Ok(()) => fed += chunk.len(),
                Err(e) => break e,
            }
            assert!(fed < 4096, "limit never hit");
        };
        assert_eq!(err.condition(), "policy-violation");
    }

    #[test]
    fn huge_start_tag_is_refused_before_it_completes() {
        let mut p = opened();
        let mut out = Vec::new();
        let mut tag = b"<message to='".to_vec();
        tag.extend(std::iter::repeat_n(b'x', 3000));
        assert_eq!(
            p.feed(&tag, &mut out).unwrap_err().condition(),
            "policy-violation"
        );
    }

    #[test]
    fn an_endless_stream_header_is_refused_before_it_completes() {
        let mut p = StreamParser::new(limits());
        let mut out = Vec::new();
        p.feed(
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'",
            &mut out,
        )
        .expect("a header may start");
        let attrs: Vec<u8> = (0..1000)
            .flat_map(|i| format!(" a{i}='x'").into_bytes())
            .collect();
        let err = p.feed(&attrs, &mut out).unwrap_err();
        assert_eq!(err.condition(), "policy-violation");
        assert!(
            p.pending_bytes() <= HEADER_BYTES + STEP,
            "{}",
            p.pending_bytes()
        );
    }

    #[test]
    fn one_element_parses_with_the_stream_limits() {
        let body =
            b"<?xml version='1.0'?><body xmlns='http://jabber.org/protocol/httpbind' rid='1'>\
            <message xmlns='jabber:client' to='a@b'><body>hi</body></message></body>";
        let el = parse_element(body, limits()).expect("valid");
        assert!(el.is("body", "http://jabber.org/protocol/httpbind"));
        assert_eq!(el.attr("rid"), Some("1"));
        assert_eq!(el.children().count(), 1);
        for bad in [
            &b"<body xmlns='x'>"[..],
            b"<body xmlns='x'/><body xmlns='x'/>",
            b"<body xmlns='x'/>junk",
            b"",
            b"</body>",
        ] {
            assert!(parse_element(bad, limits()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_element_deeper_than_the_limit_is_refused_without_recursion() {
        // 20 000 levels: a recursive parser, serialiser or drop overflows the stack.
        let depth = 20_000;
        let mut doc = String::from("<body xmlns='x'>");
        doc.push_str(&"<a>".repeat(depth));
        doc.push_str(&"</a>".repeat(depth));
        doc.push_str("</body>");
        let big = ParserLimits {
            stanza_bytes: 1 << 20,
            ..limits()
        };
        let err = parse_element(doc.as_bytes(), big).unwrap_err();
        assert_eq!(err.condition(), "policy-violation");
    }

    #[test]
    fn an_attribute_value_over_the_token_limit_is_a_policy_violation() {
        let mut p = StreamParser::new(ParserLimits {
            stanza_bytes: 1 << 20,
            ..limits()
        });
        feed_all(&mut p, OPEN).expect("header");
        let mut msg = b"<message to='".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 3 * TOKEN_BYTES));
        msg.extend(b"'/>");
        assert_eq!(
            feed_all(&mut p, &msg).unwrap_err().condition(),
            "policy-violation"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = opened();
        let deep = "<a>".repeat(20);
        assert_eq!(
            feed_all(&mut p, deep.as_bytes()).unwrap_err().condition(),
            "policy-violation"
        );
    }

    #[test]
    fn too_many_attributes_are_refused() {
        let mut p = opened();
        let err = feed_all(&mut p, b"<message a='1' b='2' c='3' d='4' e='5'/>").unwrap_err();
        assert_eq!(err.condition(), "policy-violation");
    }

    #[test]
    fn invalid_utf8_is_unsupported_encoding() {
        let mut p = opened();
        let err = feed_all(&mut p, b"<message><body>\xff\xfe</body></message>").unwrap_err();
        assert_eq!(err.condition(), "unsupported-encoding");
    }

    #[test]
    fn wrong_root_is_invalid_namespace() {
        let mut p = StreamParser::new(limits());
        let err = feed_all(&mut p, b"<stream xmlns='jabber:client'>").unwrap_err();
        assert_eq!(err, ParseError::InvalidNamespace);
    }

    #[test]
    fn text_between_stanzas_must_be_whitespace() {
        let mut p = opened();
        assert!(feed_all(&mut p, b" \n\t ").expect("keepalive").is_empty());
        assert_eq!(
            feed_all(&mut p, b"junk<presence/>")
                .unwrap_err()
                .condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn mismatched_tags_are_not_well_formed() {
        let mut p = opened();
        assert_eq!(
            feed_all(&mut p, b"<a></b>").unwrap_err().condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn keepalives_do_not_accumulate_towards_the_limit() {
        let mut p = opened();
        for _ in 0..100 {
            feed_all(&mut p, &[b' '; 100]).expect("whitespace is fine");
        }
        assert!(matches!(
            &feed_all(&mut p, b"<presence/>").expect("ok")[..],
            [Frame::Stanza(_)]
        ));
    }
}
