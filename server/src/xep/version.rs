//! XEP-0092 Software Version of the server.

use crate::registry::{FeatureScope, Module, Registry};
use crate::router::Addr;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "version",
    register,
};
const NS: &str = "jabber:iq:version";

fn register(r: &mut Registry) {
    r.iq(false, Addr::Host, NS, "query", |_| {
        Box::pin(async {
            Ok(Some(
                el("query", NS)
                    .child(el("name", NS).text("Kith").build())
                    .child(el("version", NS).text(env!("CARGO_PKG_VERSION")).build())
                    .build(),
            ))
        })
    });
    r.feature(FeatureScope::Host, NS);
}
