//! Local delivery primitives shared by the message, presence and roster modules.

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use crate::core::Core;
use crate::session::SessionHandle;

/// Sessions of `bare` that have sent available presence.
pub fn available(core: &Core, bare: &BareJid) -> Vec<Arc<SessionHandle>> {
    core.sessions
        .of(bare)
        .into_iter()
        .filter(|s| s.state().available)
        .collect()
}

/// Deliver a copy of `stanza`, as it is, to every available session of `bare`;
/// returns how many got one.
pub fn to_available(core: &Core, bare: &BareJid, stanza: &Element) -> usize {
    // XEP-0191: nothing passes between an account and a JID either blocked.
    if crate::blocking::enforce::stanza_blocked(core, stanza, bare) {
        return 0;
    }
    // A contact on another server: its server delivers (federation, s2s/).
    if crate::s2s::is_remote(core, bare.domain().as_str()) {
        crate::s2s::route_out_from(core, stanza.clone());
        return 1;
    }
    let targets = available(core, bare);
    for s in &targets {
        s.send(stanza.clone());
    }
    targets.len()
}

/// Username (localpart) of a local bare JID.
pub fn username(bare: &BareJid) -> &str {
    bare.node().map(|n| n.as_str()).unwrap_or("")
}
