//! Addresses: the `jid` crate's parsing and stringprep normalisation (every
//! `to`/`from` a peer sends), the server's own account-name normalisation
//! (`normalize_user`, SASL usernames), authzid checks, destination
//! classification (`addr_of`) and Bind2 resources from a client's `<tag/>`.
//!
//! Input: the address text.
//!
//! Properties: account-name normalisation is idempotent (a normalised name
//! normalises to itself), so two spellings of one account never end up as
//! two accounts; Bind2 always binds some resource.

#![no_main]

use jid::{BareJid, FullJid, Jid};
use kith_server::fuzzing::{addr_of, authzid_ok, bind2_jid, normalize_user, Addr};
use libfuzzer_sys::fuzz_target;

const DOMAIN: &str = "localhost";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(alice) = BareJid::new("alice@localhost") else {
        return;
    };

    // The jid crate's own normalisation is not idempotent (docs/fuzzing.md):
    // a normalised JID may parse into another JID, or not at all. Only
    // crashes are looked for there.
    if let Ok(j) = Jid::new(text) {
        let _ = Jid::new(j.as_str());
        let _ = BareJid::new(j.to_bare().as_str());
        let addr = addr_of(Some(&j), &alice, DOMAIN);
        if j.domain().as_str() != DOMAIN {
            assert_eq!(addr, Addr::Remote);
        }
    }
    let _ = BareJid::new(text);
    let _ = FullJid::new(text);

    // Kith's account names are: a name that logs in is stored as itself.
    if let Some(user) = normalize_user(text, DOMAIN) {
        assert_eq!(
            normalize_user(&user, DOMAIN).as_deref(),
            Some(user.as_str()),
            "account name {text:?} normalised to {user:?}"
        );
        let _ = authzid_ok(&format!("{user}@{DOMAIN}"), &user, DOMAIN);
    }
    let _ = authzid_ok(text, "alice", DOMAIN);

    let bound = bind2_jid(&alice, Some(text), Some(text));
    assert!(bound.is_some(), "Bind2 bound nothing for the tag {text:?}");
});
