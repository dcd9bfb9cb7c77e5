//! RFC 3921 session establishment, kept as an optional no-op for old clients
//! (RFC 6121 does not need it; the stream feature says `<optional/>`).

use crate::registry::{Module, Registry};
use crate::router::Addr;

pub const MODULE: Module = Module {
    name: "session",
    register,
};
const NS: &str = "urn:ietf:params:xml:ns:xmpp-session";

fn register(r: &mut Registry) {
    for addr in [Addr::Host, Addr::SelfBare] {
        r.iq(true, addr, NS, "session", |_| Box::pin(async { Ok(None) }));
    }
}
