//! Addresses: the `jid` crate's parsing and stringprep normalisation (every
//! `to`/`from` a peer sends), the server's own account-name normalisation
//! (`normalize_user`, SASL usernames), authzid checks, destination
//! classification (`addr_of`) and Bind2 resources from a client's `<tag/>`.
//!
//! Input: the address text.
//!
//! Properties: normalisation is idempotent (a normalised JID or account name
//! parses back into itself), so two spellings of one account never end up as
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

    // A normalised JID parses back into itself, if it parses at all: jid 0.12
    // can refuse (IDNA) the normalised form of a domain it accepted, see
    // docs/fuzzing.md; that is not asserted here.
    if let Ok(j) = Jid::new(text) {
        if let Ok(again) = Jid::new(j.as_str()) {
            assert_eq!(again, j, "{text:?} normalised to {:?}", j.as_str());
        }
        let bare = j.to_bare();
        if let Ok(again) = BareJid::new(bare.as_str()) {
            assert_eq!(again, bare);
        }
        let addr = addr_of(Some(&j), &alice, DOMAIN);
        if j.domain().as_str() != DOMAIN {
            assert_eq!(addr, Addr::Remote);
        }
    }
    if let Ok(b) = BareJid::new(text) {
        if let Ok(again) = BareJid::new(b.as_str()) {
            assert_eq!(again, b);
        }
    }
    if let Ok(f) = FullJid::new(text) {
        if let Ok(again) = FullJid::new(f.as_str()) {
            assert_eq!(again, f);
        }
    }

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
