//! Entry points for the fuzz targets in `fuzz/` only (cargo feature `fuzzing`,
//! off in every real build). Each one reaches a parser the server runs on what
//! a peer sends, without a socket, a database or a runtime, and does exactly
//! what the server does with it. See `docs/fuzzing.md`.

use jid::{BareJid, FullJid};
use minidom::Element;

use crate::config::Limits;
use crate::sasl::Failure;
use crate::stream::framed::{self, Split};
use crate::stream::{self, c2s};
use crate::tls::ChannelBindings;
use crate::upload::slot::Slot;
use crate::upload::PutQuery;
use crate::xml::ParserLimits;

pub use crate::router::{addr_of, Addr};
pub use crate::stream::c2s::normalize_user;
pub use crate::upload::slot::{content_type_or_default, valid_filename};

/// The stream parser's limits on a client stream, before or after authentication.
pub fn c2s_limits(limits: &Limits, authenticated: bool) -> ParserLimits {
    ParserLimits {
        stanza_bytes: if authenticated {
            limits.stanza_size
        } else {
            limits.pre_auth_stanza_size
        },
        depth: limits.max_depth,
        attributes: limits.max_attributes,
    }
}

/// A WebSocket or BOSH client message as the stream bytes the engine parses
/// (RFC 7395: `<open/>` and `<close/>` become the stream header and footer).
pub fn framed_in(message: &str) -> String {
    framed::translate_in(message)
}

/// Take the next framed message from what the engine wrote: `Some(Some(m))` a
/// message for the client, `Some(None)` an item dropped (XML declaration),
/// `None` when `buf` holds no complete item yet.
pub fn framed_out(buf: &mut Vec<u8>) -> Option<Option<String>> {
    match framed::split_next(buf) {
        Split::Message(m) => Some(Some(m)),
        Split::Skip => Some(None),
        Split::Incomplete => None,
    }
}

/// A SASL payload's text (`<auth/>`, `<response/>`, `<initial-response/>`)
/// as bytes: `None` for no data, `=` for empty data (RFC 6120 §6.4.2).
pub fn sasl_decode(text: &str) -> Result<Option<Vec<u8>>, Failure> {
    c2s::decode(text).map_err(|(f, _)| f)
}

/// Whether the `authzid` a client asked for is its own account.
pub fn authzid_ok(authzid: &str, username: &str, domain: &str) -> bool {
    c2s::authzid_ok(authzid, username, domain)
}

/// What SASL2 reads from an `<authenticate/>` before it authenticates.
#[derive(Debug)]
pub struct Authenticate {
    pub agent_id: Option<String>,
    pub software: String,
    pub device: String,
    /// The decoded `<initial-response/>`, if present.
    pub initial: Option<Vec<u8>>,
    /// The FAST mechanism of a `<request-token/>`.
    pub token_mechanism: Option<String>,
}

/// Read an `<authenticate/>` (XEP-0388) as `sasl2::authenticate` does, in
/// the same order, with the same refusals.
pub fn sasl2_authenticate(
    auth: &Element,
    bindings: &ChannelBindings,
) -> Result<Authenticate, Failure> {
    let agent = stream::user_agent(auth).map_err(|(f, _)| f)?;
    let token_mechanism = stream::token_request(auth, agent.as_ref(), bindings)
        .map_err(|(f, _)| f)?
        .map(str::to_string);
    let initial = stream::initial_response(auth).map_err(|(f, _)| f)?;
    let (agent_id, software, device) = match agent {
        Some(a) => (a.id, a.software, a.device),
        None => (None, String::new(), String::new()),
    };
    Ok(Authenticate {
        agent_id,
        software,
        device,
        initial,
        token_mechanism,
    })
}

/// The full JID Bind2 binds for `bare` with this `<tag/>` and user-agent id,
/// falling back to no tag as `bind2::bind` does; `None` if even that fails.
pub fn bind2_jid(bare: &BareJid, tag: Option<&str>, agent_id: Option<&str>) -> Option<FullJid> {
    const SECRET: &[u8] = b"fuzzing";
    let username = bare.node().map(|n| n.as_str()).unwrap_or("");
    bare.with_resource_str(&stream::bind2_resource(SECRET, username, tag, agent_id))
        .or_else(|_| {
            bare.with_resource_str(&stream::bind2_resource(SECRET, username, None, agent_id))
        })
        .ok()
}

/// Whether a PUT to `/upload/{id}/{filename}` with this query carries a valid
/// slot signature under `secret` (the checks `Uploads::authorize_put` makes
/// before it looks at the clock and the database).
pub fn upload_slot_ok(secret: &[u8], id: &str, filename: &str, q: &PutQuery) -> bool {
    crate::upload::store::valid_id(id) && slot_of(id, filename, q).verify(secret, &q.sig)
}

/// The slot a PUT's path and query describe.
fn slot_of(id: &str, filename: &str, q: &PutQuery) -> Slot {
    Slot {
        id: id.to_string(),
        filename: filename.to_string(),
        size: q.size,
        content_type: q.content_type.clone(),
        owner: q.owner.clone(),
        expires: q.expires,
    }
}

/// The signed PUT URL the server hands out for a slot.
pub fn upload_put_url(base: &str, secret: &[u8], id: &str, filename: &str, q: &PutQuery) -> String {
    slot_of(id, filename, q).put_url(base, secret)
}
