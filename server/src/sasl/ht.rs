//! The HT-SHA-256 SASL mechanisms (draft-schmaus-kitten-sasl-ht) that FAST
//! (XEP-0484) logs in with: one round trip. The client sends
//! `authcid NUL HMAC-SHA-256(token, "Initiator" || cb-data)`; the server answers
//! (SASL2 `<additional-data/>`) with `HMAC-SHA-256(token, "Responder" || cb-data)`.
//! `-NONE` has no channel binding, `-ENDP` binds to `tls-server-end-point`,
//! `-EXPR` to `tls-exporter`.
//!
//! Only SHA-256(token) is stored. Tokens are [`TOKEN_LEN`] (96) characters,
//! longer than SHA-256's 64-byte block, and HMAC (RFC 2104 §2) replaces such a
//! key by its hash before use: HMAC(token, m) = HMAC(SHA-256(token), m). So the
//! server verifies and answers with the stored hash and never keeps the token.
//! (As with any shared-secret mechanism, the stored hash is itself enough to
//! compute a valid proof: the database stays sensitive; tokens expire and can be
//! revoked.)

use ring::{digest, hmac};
use subtle::ConstantTimeEq;

use super::Failure;
use crate::tls::ChannelBindings;

/// Length of an issued token in characters (hex of 48 random bytes).
pub const TOKEN_LEN: usize = 96;
// Verifying with the stored hash relies on HMAC hashing keys longer than the block.
const _: () = assert!(TOKEN_LEN > 64, "tokens must be longer than SHA-256's block");

/// The HT mechanisms Kith implements, channel-bound first.
pub const MECHANISMS: [&str; 3] = ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"];

/// Whether `mech` names an HT mechanism (offered or not).
pub fn is_ht(mech: &str) -> bool {
    mech.starts_with("HT-")
}

/// The channel-binding data `mech` covers on this connection, or `None` when
/// the mechanism is unknown or its binding is unavailable here.
pub fn binding_data(mech: &str, bindings: &ChannelBindings) -> Option<Vec<u8>> {
    match mech {
        "HT-SHA-256-NONE" => Some(Vec::new()),
        "HT-SHA-256-ENDP" => bindings.server_end_point.clone(),
        "HT-SHA-256-EXPR" => bindings.exporter.clone(),
        _ => None,
    }
}

/// The HT mechanisms usable on this connection.
pub fn offered(bindings: &ChannelBindings) -> Vec<&'static str> {
    MECHANISMS
        .into_iter()
        .filter(|m| binding_data(m, bindings).is_some())
        .collect()
}

/// A fresh random token.
pub fn new_token() -> String {
    crate::core::random_hex(TOKEN_LEN / 2)
}

/// What is stored for a token: SHA-256 of its UTF-8 bytes.
pub fn token_hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn mac(stored_hash: &[u8], label: &[u8], cb: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, stored_hash);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(cb);
    ctx.sign().as_ref().to_vec()
}

/// Split the client's message into (authcid, proof).
pub fn parse_initial(msg: &[u8]) -> Result<(String, Vec<u8>), Failure> {
    let nul = msg
        .iter()
        .position(|b| *b == 0)
        .ok_or(Failure::MalformedRequest)?;
    let user = std::str::from_utf8(&msg[..nul]).map_err(|_| Failure::MalformedRequest)?;
    let proof = &msg[nul + 1..];
    if user.is_empty() || proof.len() != 32 {
        return Err(Failure::MalformedRequest);
    }
    Ok((user.to_string(), proof.to_vec()))
}

/// Whether `proof` is the initiator proof for the token whose hash is `stored_hash`,
/// compared in constant time.
pub fn initiator_ok(stored_hash: &[u8], cb: &[u8], proof: &[u8]) -> bool {
    mac(stored_hash, b"Initiator", cb).ct_eq(proof).into()
}

/// The server's answer, proving it knows the token too.
pub fn responder(stored_hash: &[u8], cb: &[u8]) -> Vec<u8> {
    mac(stored_hash, b"Responder", cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client computes: HMAC keyed with the token itself.
    fn client_proof(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let mut m = label.to_vec();
        m.extend_from_slice(cb);
        hmac::sign(&key, &m).as_ref().to_vec()
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 32);
    }

    #[test]
    fn the_stored_hash_verifies_what_the_client_computed_with_the_token() {
        let token = new_token();
        let stored = token_hash(&token);
        let cb = b"binding".to_vec();
        assert!(initiator_ok(
            &stored,
            &cb,
            &client_proof(&token, b"Initiator", &cb)
        ));
        assert_eq!(
            responder(&stored, &cb),
            client_proof(&token, b"Responder", &cb)
        );
        // Another token, other binding data, or the responder proof replayed: refused.
        assert!(!initiator_ok(
            &stored,
            &cb,
            &client_proof(&new_token(), b"Initiator", &cb)
        ));
        assert!(!initiator_ok(
            &stored,
            b"other",
            &client_proof(&token, b"Initiator", &cb)
        ));
        assert!(!initiator_ok(
            &stored,
            &cb,
            &client_proof(&token, b"Responder", &cb)
        ));
    }

    #[test]
    fn initial_message_parsing() {
        let mut msg = b"alice\0".to_vec();
        msg.extend([1u8; 32]);
        let (u, p) = parse_initial(&msg).expect("valid");
        assert_eq!((u.as_str(), p.len()), ("alice", 32));
        // A NUL inside the proof is fine: only the first one splits.
        let mut msg = b"alice\0".to_vec();
        msg.extend([0u8; 32]);
        assert!(parse_initial(&msg).is_ok());
        for bad in [
            &b"alice"[..],
            b"\0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            b"alice\0short",
        ] {
            assert_eq!(parse_initial(bad), Err(Failure::MalformedRequest));
        }
    }

    #[test]
    fn mechanisms_need_their_binding() {
        let none = ChannelBindings::default();
        assert_eq!(offered(&none), vec!["HT-SHA-256-NONE"]);
        let both = ChannelBindings {
            exporter: Some(vec![1]),
            server_end_point: Some(vec![2]),
        };
        assert_eq!(offered(&both), MECHANISMS.to_vec());
        assert_eq!(binding_data("HT-SHA-256-EXPR", &both), Some(vec![1]));
        assert_eq!(binding_data("HT-SHA-512-NONE", &both), None);
        assert!(is_ht("HT-SHA-256-NONE") && !is_ht("PLAIN"));
    }
}
