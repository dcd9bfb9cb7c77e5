//! What the fuzz targets share: splitting one input into reads or fields,
//! and feeding a stream parser the way a connection does.

use kith_server::xml::{Element, Frame, ParseError, ParserLimits, StreamParser};

/// Cut `data` into pieces of 1 to 64 bytes whose sizes follow `seed`, as a
/// peer's bytes arrive in reads of any size.
pub fn reads(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift: cheap, deterministic, all sizes reachable.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 64) as usize + 1;
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// Split at every `sep` byte (inputs made of several fields or messages).
pub fn fields(data: &[u8], sep: u8) -> Vec<&[u8]> {
    data.split(|b| *b == sep).collect()
}

/// What feeding a whole stream gave: the frames, then the error that ended it.
#[derive(Debug)]
pub struct Fed {
    pub frames: Vec<Frame>,
    pub error: Option<ParseError>,
}

/// Feed `pieces` to a fresh parser with `limits`, stopping at the first error
/// (a connection is closed then). Every frame is checked against the limits.
pub fn feed<'a>(limits: ParserLimits, pieces: impl IntoIterator<Item = &'a [u8]>) -> Fed {
    let mut parser = StreamParser::new(limits);
    let mut frames = Vec::new();
    for piece in pieces {
        let before = frames.len();
        let r = parser.feed(piece, &mut frames);
        for f in &frames[before..] {
            check_frame(f, limits);
        }
        if let Err(e) = r {
            return Fed {
                frames,
                error: Some(e),
            };
        }
    }
    Fed {
        frames,
        error: None,
    }
}

/// A stanza the parser let through respects the depth and attribute limits.
pub fn check_frame(frame: &Frame, limits: ParserLimits) {
    if let Frame::Stanza(el) = frame {
        let mut todo = vec![(el, 1usize)];
        while let Some((e, depth)) = todo.pop() {
            assert!(
                depth <= limits.depth,
                "element <{}> at depth {depth} passed a limit of {}",
                e.name(),
                limits.depth
            );
            let attrs = e.attrs().len();
            assert!(
                attrs <= limits.attributes,
                "<{}> has {attrs} attributes, the limit is {}",
                e.name(),
                limits.attributes
            );
            todo.extend(e.children().map(|c| (c, depth + 1)));
        }
    }
}

/// Whether two runs over the same bytes gave the same frames.
pub fn same_frames(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Frame::Open(x), Frame::Open(y)) => {
                (&x.to, &x.from, &x.id, &x.version, &x.lang)
                    == (&y.to, &y.from, &y.id, &y.version, &y.lang)
            }
            (Frame::Stanza(x), Frame::Stanza(y)) => x == y,
            (Frame::Close, Frame::Close) => true,
            _ => false,
        })
}

/// What the server writes for a stanza parses back into the same stanza: the
/// server forwards what it parsed, so a stanza that does not survive the trip
/// would reach other peers as malformed XML.
pub fn check_round_trip(el: &Element, limits: ParserLimits) {
    // No default namespace on this header: the stanza's own must come through.
    let mut bytes = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>".to_vec();
    kith_server::xml::serialize(el, &mut bytes);
    let wide = ParserLimits {
        stanza_bytes: usize::MAX,
        ..limits
    };
    let fed = feed(wide, [&bytes[..]]);
    assert!(
        fed.error.is_none(),
        "{:?} re-serialised as {:?}",
        fed.error,
        String::from_utf8_lossy(&bytes)
    );
    match &fed.frames[..] {
        [Frame::Open(_), Frame::Stanza(back)] => {
            assert!(back == el, "{el:?} came back as {back:?}")
        }
        other => panic!("one stanza re-serialised as {other:?}"),
    }
}
