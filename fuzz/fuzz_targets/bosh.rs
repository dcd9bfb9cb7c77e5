//! BOSH (XEP-0124/0206): a POST body through `kith_web::bosh::parse_body`,
//! then its children, one framed message each, into a pre-auth stream parser
//! after `<open/>`, as `bosh.rs` delivers them to the engine.
//!
//! Input: the request body.
//!
//! Properties: a body that parses has its `rid`; the framing takes each
//! serialised child for exactly one element.

#![no_main]

use kith_fuzz::check_frame;
use kith_server::fuzzing::{c2s_limits, framed_in};
use kith_server::xml::{ParserLimits, StreamParser};
use kith_server::Limits;
use libfuzzer_sys::fuzz_target;

const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

fuzz_target!(|data: &[u8]| {
    let defaults = Limits::default();
    // The server's limits for a body: the stream's, one level for <body/>.
    let wrapper = ParserLimits {
        stanza_bytes: defaults.stanza_size + 4096,
        depth: defaults.max_depth + 1,
        attributes: defaults.max_attributes,
    };
    let Ok((body, _rid, children)) = kith_web::bosh::parse_body(data, wrapper) else {
        return;
    };
    assert!(body.attr("rid").is_some());
    let limits = c2s_limits(&defaults, false);
    let mut parser = StreamParser::new(limits);
    let mut frames = Vec::new();
    for message in std::iter::once(OPEN).chain(children.iter().map(String::as_str)) {
        // The framing takes each serialised child as exactly one element.
        let bytes = framed_in(message);
        assert!(bytes != "<>", "child {message:?} is not one element");
        let before = frames.len();
        let r = parser.feed(bytes.as_bytes(), &mut frames);
        for f in &frames[before..] {
            check_frame(f, limits);
        }
        if r.is_err() {
            break;
        }
    }
});
