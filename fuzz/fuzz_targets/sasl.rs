//! SASL messages as `c2s::exchange` and FAST read them: PLAIN, the SCRAM
//! client-first (GS2 header, channel-binding flag, authzid, saslname escapes,
//! nonce) and client-final (channel binding, nonce, proof), the HT-SHA-256
//! initial message, usernames and authzids; and the base64 payload decoding.
//!
//! Input: a control byte, then up to three fields separated by 0xFF (never
//! in UTF-8): the initial response, the client-final, extra client-final
//! attributes. Control bits: 0-2 the mechanism (0-4 SCRAM-SHA-256-PLUS,
//! SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN; 5-7 HT-SHA-256-EXPR,
//! -ENDP, -NONE), 3 a TLS connection with channel bindings, 4 a known
//! account, 5 the harness answers the challenge correctly itself.
//!
//! Properties: a correct SCRAM answer (computed here by an independent
//! client) is accepted and the server's signature checks out, whatever the
//! username, nonce, authzid or channel binding the client-first carried; a
//! wrong one never is, nor any answer for an unknown account; a correct HT
//! proof is accepted; base64 payloads decode back to what was encoded.

#![no_main]

use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kith_fuzz::fields;
use kith_server::fuzzing::{authzid_ok, normalize_user, sasl_decode};
use kith_server::sasl::{ht, parse_plain, Failure, Hash, Mechanism, ScramKeys, ScramServer};
use kith_server::tls::ChannelBindings;
use libfuzzer_sys::fuzz_target;
use ring::{hmac, pbkdf2};

const DOMAIN: &str = "localhost";
const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"saltsaltsaltsalt";
const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
const EXPORTER: [u8; 32] = [7; 32];
const END_POINT: [u8; 32] = [9; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let parts = fields(rest, 0xff);
    let first = parts.first().copied().unwrap_or_default();
    let second = parts.get(1).copied().unwrap_or_default();
    let extra = parts.get(2).copied().unwrap_or_default();
    let bindings = if control & 8 != 0 {
        ChannelBindings {
            exporter: Some(EXPORTER.to_vec()),
            server_end_point: Some(END_POINT.to_vec()),
        }
    } else {
        ChannelBindings::default()
    };
    let known = control & 16 != 0;
    let answer = control & 32 != 0;

    // The payload as it arrives: base64 text.
    let text = String::from_utf8_lossy(first);
    let _ = sasl_decode(&text);
    if !first.is_empty() {
        let back = sasl_decode(&B64.encode(first));
        assert_eq!(back, Ok(Some(first.to_vec())), "base64 round trip");
    }

    let mech = usize::from(control & 7);
    match Mechanism::ALL.get(mech) {
        Some(&Mechanism::Plain) => plain(first),
        Some(&m) => {
            if let Some(hash) = m.scram_hash() {
                scram(
                    hash,
                    m.is_plus(),
                    &bindings,
                    first,
                    second,
                    extra,
                    known,
                    answer,
                );
            }
        }
        None => {
            let name = ht::MECHANISMS[(mech - Mechanism::ALL.len()) % ht::MECHANISMS.len()];
            fast(name, &bindings, first, answer);
        }
    }
});

fn plain(msg: &[u8]) {
    let Ok((authzid, user, password)) = parse_plain(msg) else {
        return;
    };
    assert!(!user.is_empty() && !password.is_empty());
    if let Some(u) = normalize_user(&user, DOMAIN) {
        if let Some(z) = authzid {
            let _ = authzid_ok(&z, &u, DOMAIN);
        }
    }
}

/// The keys stored for the known account, and the ClientKey its client derives.
fn account(hash: Hash) -> &'static (ScramKeys, Vec<u8>) {
    static SHA1: OnceLock<(ScramKeys, Vec<u8>)> = OnceLock::new();
    static SHA256: OnceLock<(ScramKeys, Vec<u8>)> = OnceLock::new();
    let cell = match hash {
        Hash::Sha1 => &SHA1,
        Hash::Sha256 => &SHA256,
    };
    cell.get_or_init(|| {
        let keys = ScramKeys::derive(hash, PASSWORD, SALT, 4096);
        let (alg, mac) = algs(hash);
        let mut salted = vec![0; hash.output_len()];
        let iterations = NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(alg, iterations, SALT, PASSWORD.as_bytes(), &mut salted);
        let client_key = sign(mac, &salted, b"Client Key");
        (keys, client_key)
    })
}

fn algs(hash: Hash) -> (pbkdf2::Algorithm, hmac::Algorithm) {
    match hash {
        Hash::Sha1 => (
            pbkdf2::PBKDF2_HMAC_SHA1,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        Hash::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256),
    }
}

fn sign(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

#[allow(clippy::too_many_arguments)]
fn scram(
    hash: Hash,
    plus: bool,
    bindings: &ChannelBindings,
    first: &[u8],
    second: &[u8],
    extra: &[u8],
    known: bool,
    answer: bool,
) {
    // As `exchange` calls it: -PLUS counts as offered.
    let Ok(mut server) = ScramServer::start(hash, plus, true, bindings, first) else {
        return;
    };
    let username = normalize_user(server.username(), DOMAIN);
    let keys = known.then(|| account(hash).0.clone());
    let server_first = server.challenge(keys, b"server secret", 4096, SERVER_NONCE);
    let Ok(server_first) = String::from_utf8(server_first) else {
        panic!("server-first is not UTF-8");
    };

    // A client reading the server-first.
    let Some(first_text) = std::str::from_utf8(first).ok() else {
        panic!("a client-first that is not UTF-8 was accepted");
    };
    let mut gs2 = first_text.splitn(3, ',');
    let (Some(flag), Some(authz), Some(bare)) = (gs2.next(), gs2.next(), gs2.next()) else {
        panic!("a client-first without a GS2 header was accepted: {first_text:?}");
    };
    let client_nonce = bare
        .split(',')
        .nth(1)
        .and_then(|r| r.strip_prefix("r="))
        .unwrap_or_default();
    let nonce = format!("{client_nonce}{SERVER_NONCE}");
    assert!(
        server_first.starts_with(&format!("r={nonce},s=")),
        "server-first {server_first:?} does not carry the nonce {nonce:?}"
    );

    let final_message = if answer {
        let mut cbind = format!("{flag},{authz},").into_bytes();
        match flag {
            "p=tls-exporter" => cbind.extend_from_slice(&EXPORTER),
            "p=tls-server-end-point" => cbind.extend_from_slice(&END_POINT),
            _ => {}
        }
        let extra = String::from_utf8_lossy(extra);
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        let without_proof = format!("c={},r={nonce}{extra}", B64.encode(&cbind));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let (keys, client_key) = account(hash);
        let (_, mac) = algs(hash);
        let signature = sign(mac, &keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = sign(mac, &keys.server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", B64.encode(proof));
        let result = server.finish(message.as_bytes());
        if known {
            let expected = format!("v={}", B64.encode(server_signature)).into_bytes();
            assert_eq!(
                result.as_ref().ok(),
                Some(&expected),
                "a correct answer {message:?} to {server_first:?} after {first_text:?}"
            );
        } else {
            assert_eq!(result.map_err(|e| e.0), Err(Failure::NotAuthorized));
        }
        return;
    } else {
        second
    };
    let result = server.finish(final_message);
    if result.is_ok() {
        assert!(known, "an unknown account authenticated");
    }
    if let (Ok(_), Some(u), Some(z)) = (&result, &username, server.authzid()) {
        let _ = authzid_ok(z, u, DOMAIN);
    }
}

fn fast(mech: &str, bindings: &ChannelBindings, msg: &[u8], answer: bool) {
    let Some(cb) = ht::binding_data(mech, bindings) else {
        return;
    };
    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef\
                         0123456789abcdef0123456789abcdef0123456789abcdef";
    let stored = ht::token_hash(TOKEN);
    let mut msg = msg.to_vec();
    if answer {
        // A client holding the token proves it for this channel.
        msg.truncate(msg.iter().position(|b| *b == 0).unwrap_or(msg.len()));
        msg.push(0);
        let mut label = b"Initiator".to_vec();
        label.extend_from_slice(&cb);
        msg.extend(sign(hmac::HMAC_SHA256, TOKEN.as_bytes(), &label));
    }
    let Ok((user, proof)) = ht::parse_initial(&msg) else {
        return;
    };
    let ok = ht::initiator_ok(&stored, &cb, &proof);
    if answer {
        assert!(ok, "a correct HT proof for {user:?} was refused");
        let mut label = b"Responder".to_vec();
        label.extend_from_slice(&cb);
        assert_eq!(
            ht::responder(&stored, &cb),
            sign(hmac::HMAC_SHA256, TOKEN.as_bytes(), &label)
        );
    }
    let _ = normalize_user(&user, DOMAIN);
}
