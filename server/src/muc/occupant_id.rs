//! Occupant ids (XEP-0421): a stable, opaque id per account and room, on
//! every presence and message from an occupant, so clients can tell who
//! said what across nick changes without seeing real JIDs. It is an HMAC of
//! the room and the account's bare JID under a secret kept in the database
//! (so ids survive restarts); it differs between rooms and cannot be
//! reversed.

use base64::Engine;
use jid::BareJid;
use minidom::Element;

use super::room::Room;
use crate::core::Core;
use crate::xml::el;

/// `urn:xmpp:occupant-id:0`
pub const NS: &str = "urn:xmpp:occupant-id:0";

/// The key, from the stored secret (created on first start).
pub async fn load_key(core: &Core) -> Result<ring::hmac::Key, crate::storage::StorageError> {
    let secret = core
        .db
        .server_secret("muc-occupant-id", || {
            crate::core::random_hex(32).into_bytes()
        })
        .await?;
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
}

/// The occupant id of `bare` in `room`.
pub fn id(core: &Core, r: &Room, bare: &BareJid) -> String {
    let mut ctx = ring::hmac::Context::with_key(core.muc.key());
    ctx.update(r.jid.as_str().as_bytes());
    ctx.update(b"\0");
    ctx.update(bare.as_str().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&ctx.sign().as_ref()[..18])
}

/// The `<occupant-id/>` element for `bare` in `room`.
pub fn element(core: &Core, r: &Room, bare: &BareJid) -> Element {
    el("occupant-id", NS).attr("id", id(core, r, bare)).build()
}
