//! XMPP over WebSocket (RFC 7395): each text message goes through the framing
//! translation (`<open/>` and `<close/>` become the stream header and footer,
//! anything but one element becomes malformed input) into a pre-auth stream
//! parser, as `websocket.rs` → `FramedSender::send` → the engine do. The same
//! bytes are also split as engine output into framed messages
//! (`FramedReceiver::recv`).
//!
//! Input: text messages separated by NUL bytes.
//!
//! Properties: an `<open/>` always becomes a stream header the parser reads
//! as one (or refuses as malformed XML, never as something else); any other
//! message passes unchanged or becomes the malformed marker; splitting engine
//! output always makes progress.

#![no_main]

use kith_fuzz::{check_frame, fields};
use kith_server::fuzzing::{c2s_limits, framed_in, framed_out};
use kith_server::xml::{Frame, ParseError, StreamParser};
use kith_server::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = c2s_limits(&Limits::default(), false);
    let mut parser = StreamParser::new(limits);
    let mut frames = Vec::new();
    let mut failed = false;
    for message in fields(data, 0).into_iter().take(64) {
        // The WebSocket layer hands over text messages only.
        let Ok(text) = std::str::from_utf8(message) else {
            continue;
        };
        let bytes = framed_in(text);
        let trimmed = text.trim();
        if trimmed.starts_with("<open") && bytes.starts_with("<stream:stream ") {
            // A header alone, to a fresh parser: exactly one stream open.
            let mut alone = StreamParser::new(limits);
            let mut out = Vec::new();
            match alone.feed(bytes.as_bytes(), &mut out) {
                Ok(()) => assert!(
                    matches!(&out[..], [Frame::Open(_)]),
                    "{text:?} became {bytes:?}, read as {out:?}"
                ),
                Err(e) => assert!(
                    matches!(
                        e,
                        ParseError::NotWellFormed(_) | ParseError::UnsupportedEncoding
                    ),
                    "{text:?} became {bytes:?}, refused with {e:?}"
                ),
            }
        } else if !trimmed.starts_with("<close") {
            assert!(
                bytes == trimmed || bytes == "<>",
                "{text:?} became {bytes:?}"
            );
        }
        if !failed {
            let before = frames.len();
            failed = parser.feed(bytes.as_bytes(), &mut frames).is_err();
            for f in &frames[before..] {
                check_frame(f, limits);
            }
        }
    }

    let mut out = data.to_vec();
    while let Some(item) = framed_out(&mut out) {
        if let Some(m) = item {
            assert!(!m.is_empty(), "an empty framed message");
        }
        // Each item consumed bytes: the loop ends.
    }
});
