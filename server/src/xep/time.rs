//! XEP-0202 Entity Time of the server, and the UTC timestamps (XEP-0082) other
//! modules stamp with.

use crate::registry::{FeatureScope, Module, Registry};
use crate::router::Addr;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "time",
    register,
};
const NS: &str = "urn:xmpp:time";

fn register(r: &mut Registry) {
    r.iq(false, Addr::Host, NS, "time", |_| {
        Box::pin(async {
            Ok(Some(
                el("time", NS)
                    .child(el("tzo", NS).text("+00:00").build())
                    .child(el("utc", NS).text(now_rfc3339()).build())
                    .build(),
            ))
        })
    });
    r.feature(FeatureScope::Host, NS);
}

/// Now, as an XEP-0082 DateTime in UTC, whole seconds (fractions are optional
/// in XEP-0082, and several clients cannot parse them).
pub fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_xep0082() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
