//! kith-bench: raw-XMPP load generator (see tests/bench/).
fn main() {}
