//! SASL SCRAM-SHA-1 client (RFC 5802) without channel binding, written with `ring`.
//!
//! The generator authenticates the way a phone app does on its first login: it derives
//! the salted password from the salt and iteration count the server sends, every time.

use std::num::NonZeroU32;

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// The highest iteration count the client accepts (bounds its own CPU per login).
const MAX_ITERATIONS: u32 = 1_000_000;
/// GS2 header for "client does not support channel binding", base64-encoded.
const GS2_HEADER_B64: &str = "biws";

/// State of one SCRAM-SHA-1 exchange.
pub struct Scram {
    client_first_bare: String,
    nonce: String,
    server_signature: Option<[u8; 20]>,
}

impl Scram {
    /// Starts an exchange for `user`; returns the state and the client-first message.
    pub fn start(user: &str, rng: &dyn SecureRandom) -> Result<(Self, String)> {
        let mut raw = [0u8; 18];
        rng.fill(&mut raw)
            .map_err(|_| anyhow!("system random failed"))?;
        let nonce = B64.encode(raw);
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        let first = format!("n,,{client_first_bare}");
        Ok((
            Self {
                client_first_bare,
                nonce,
                server_signature: None,
            },
            first,
        ))
    }

    /// Answers the server-first message with the client-final message (with proof).
    pub fn respond(&mut self, server_first: &str, password: &str) -> Result<String> {
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(B64.decode(v).context("salt is not base64")?),
                Some(("i=", v)) => iterations = Some(v.parse::<u32>().context("bad i=")?),
                Some(("m=", _)) => bail!("server requires an unknown SCRAM extension"),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| anyhow!("server-first has no nonce"))?;
        let salt = salt.ok_or_else(|| anyhow!("server-first has no salt"))?;
        let iterations = iterations.ok_or_else(|| anyhow!("server-first has no count"))?;
        ensure!(
            nonce.starts_with(&self.nonce),
            "server nonce does not extend ours"
        );
        ensure!(
            iterations <= MAX_ITERATIONS,
            "iteration count {iterations} too high"
        );
        let iterations =
            NonZeroU32::new(iterations).ok_or_else(|| anyhow!("iteration count is zero"))?;

        let mut salted = [0u8; 20];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA1,
            iterations,
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted_key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, client_key.as_ref());
        let without_proof = format!("c={GS2_HEADER_B64},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let stored = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, stored_key.as_ref());
        let client_signature = hmac::sign(&stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();

        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, server_key.as_ref());
        let mut signature = [0u8; 20];
        signature.copy_from_slice(hmac::sign(&server_key, auth_message.as_bytes()).as_ref());
        self.server_signature = Some(signature);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message (`v=...`) proves the server knows the password.
    pub fn verify(&self, server_final: &str) -> Result<()> {
        let expected = self
            .server_signature
            .ok_or_else(|| anyhow!("server-final before client-final"))?;
        let v = server_final
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| anyhow!("server-final has no verifier: {server_final}"))?;
        let got = B64.decode(v).context("verifier is not base64")?;
        ensure!(got == expected, "server signature does not match");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_example() {
        let (mut scram, first) =
            Scram::start("user", &ring::rand::SystemRandom::new()).expect("start");
        assert!(first.starts_with("n,,n=user,r="));
        // Replace our random nonce with the RFC's to reuse its vector.
        scram.nonce = "fyko+d2lbbFgONRv9qkxdawL".into();
        scram.client_first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into();
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let last = scram.respond(server_first, "pencil").expect("respond");
        assert_eq!(
            last,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        scram
            .verify("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .expect("server signature");
        assert!(scram.verify("v=AAAA").is_err());
    }
}
