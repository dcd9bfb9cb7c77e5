//! The `kith` command.
fn main() {}
