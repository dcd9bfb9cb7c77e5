//! XEP-0199 XMPP Ping: the server (and accounts, on their behalf) answer pings.

use crate::registry::{FeatureScope, Module, Registry};
use crate::router::Addr;

pub const MODULE: Module = Module {
    name: "ping",
    register,
};
const NS: &str = "urn:xmpp:ping";

fn register(r: &mut Registry) {
    for addr in [Addr::Host, Addr::SelfBare, Addr::Bare] {
        r.iq(false, addr, NS, "ping", |_| Box::pin(async { Ok(None) }));
    }
    r.feature(FeatureScope::Host, NS);
}
