//! The server side of SCRAM (RFC 5802, RFC 7677) with channel binding
//! (RFC 5929 `tls-server-end-point`, RFC 9266 `tls-exporter`).
//!
//! Written here rather than taken from the `sasl` crate, whose server side
//! rejects the `n` GS2 flag and compares proofs in variable time. Proofs are
//! compared with `subtle`. Unknown accounts run the same exchange against keys
//! derived from a server secret, so a client cannot tell them from a wrong
//! password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::{Failure, Hash, ScramKeys};
use crate::tls::ChannelBindings;

/// A SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramError(pub Failure, pub &'static str);

/// The state of one server-side SCRAM exchange.
pub struct ScramServer {
    hash: Hash,
    plus: bool,
    /// Whether the server offered -PLUS variants (a client saying `y` then is a downgrade).
    plus_offered: bool,
    gs2_header: String,
    cb_data: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    username: String,
    authzid: Option<String>,
    pending: Option<Pending>,
}

struct Pending {
    keys: ScramKeys,
    known: bool,
    nonce: String,
    server_first: String,
}

fn err(f: Failure, why: &'static str) -> ScramError {
    ScramError(f, why)
}

impl ScramServer {
    /// Parse the client-first-message. `bindings` are the TLS connection's
    /// channel-binding values; `plus_offered` says whether -PLUS was advertised.
    pub fn start(
        hash: Hash,
        plus: bool,
        plus_offered: bool,
        bindings: &ChannelBindings,
        client_first: &[u8],
    ) -> Result<Self, ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| err(Failure::MalformedRequest, "client-first is not UTF-8"))?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or(err(Failure::MalformedRequest, "no GS2 header"))?;
        let (authz, bare) = rest
            .split_once(',')
            .ok_or(err(Failure::MalformedRequest, "no GS2 header"))?;
        let cb_data = match (flag, plus) {
            ("n", false) => Vec::new(),
            ("y", false) if plus_offered => {
                return Err(err(
                    Failure::NotAuthorized,
                    "channel binding downgrade (y flag)",
                ))
            }
            ("y", false) => Vec::new(),
            (f, true) if f.starts_with("p=") => {
                let data = match &f[2..] {
                    "tls-exporter" => bindings.exporter.clone(),
                    "tls-server-end-point" => bindings.server_end_point.clone(),
                    _ => None,
                };
                data.ok_or(err(
                    Failure::NotAuthorized,
                    "unsupported channel binding type",
                ))?
            }
            (_, true) => return Err(err(Failure::NotAuthorized, "-PLUS needs channel binding")),
            (_, false) => {
                return Err(err(
                    Failure::MalformedRequest,
                    "channel binding without -PLUS",
                ))
            }
        };
        let authzid = match authz {
            "" => None,
            a if a.starts_with("a=") => Some(unescape(&a[2..])?),
            _ => return Err(err(Failure::MalformedRequest, "bad authzid")),
        };
        let mut attrs = bare.split(',');
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(err(Failure::MalformedRequest, "no username"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(err(Failure::MalformedRequest, "no nonce"))?;
        if nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(err(Failure::MalformedRequest, "bad nonce"));
        }
        let username = unescape(user)?;
        if username.is_empty() {
            return Err(err(Failure::MalformedRequest, "empty username"));
        }
        Ok(ScramServer {
            hash,
            plus,
            plus_offered,
            gs2_header: format!("{flag},{authz},"),
            cb_data,
            client_first_bare: bare.to_string(),
            client_nonce: nonce.to_string(),
            username,
            authzid,
            pending: None,
        })
    }

    /// The username the client claims (before authentication).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The requested authorization identity, if any.
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    /// Build the server-first-message. `keys` is `None` for an unknown account;
    /// `secret` then derives stable fake keys with `iterations` (the count new
    /// accounts get, so an unknown account looks like a real one).
    /// `server_nonce` must be random.
    pub fn challenge(
        &mut self,
        keys: Option<ScramKeys>,
        secret: &[u8],
        iterations: u32,
        server_nonce: &str,
    ) -> Vec<u8> {
        let known = keys.is_some();
        let keys = keys.unwrap_or_else(|| {
            let salt = self.hash.hmac(secret, self.username.as_bytes())[..16].to_vec();
            ScramKeys {
                salt,
                iterations,
                stored_key: self.hash.hmac(secret, b"stored"),
                server_key: self.hash.hmac(secret, b"server"),
            }
        });
        let nonce = format!("{}{}", self.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let out = server_first.clone().into_bytes();
        self.pending = Some(Pending {
            keys,
            known,
            nonce,
            server_first,
        });
        out
    }

    /// Check the client-final-message; on success return the server-final-message.
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let p = self
            .pending
            .as_ref()
            .ok_or(err(Failure::MalformedRequest, "final before first"))?;
        let text = std::str::from_utf8(client_final)
            .map_err(|_| err(Failure::MalformedRequest, "client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(err(Failure::MalformedRequest, "no proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(err(
            Failure::MalformedRequest,
            "no channel binding attribute",
        ))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(err(Failure::MalformedRequest, "no nonce"))?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| err(Failure::IncorrectEncoding, "channel binding is not base64"))?;
        let mut expected = self.gs2_header.as_bytes().to_vec();
        expected.extend_from_slice(&self.cb_data);
        if !bool::from(cbind.ct_eq(&expected)) {
            return Err(err(Failure::NotAuthorized, "channel binding mismatch"));
        }
        if nonce != p.nonce {
            return Err(err(Failure::NotAuthorized, "nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| err(Failure::IncorrectEncoding, "proof is not base64"))?;
        if proof.len() != self.hash.output_len() {
            return Err(err(Failure::NotAuthorized, "proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, p.server_first, without_proof
        );
        let client_signature = self.hash.hmac(&p.keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let stored = self.hash.digest(&client_key);
        let matches: bool = stored.ct_eq(&p.keys.stored_key).into();
        if !(matches && p.known) {
            return Err(err(
                Failure::NotAuthorized,
                "wrong password or unknown account",
            ));
        }
        let server_signature = self.hash.hmac(&p.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// The hash in use.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Whether this exchange is channel-bound.
    pub fn is_plus(&self) -> bool {
        self.plus && self.plus_offered
    }
}

/// Undo RFC 5802 `saslname` escaping (`=2C` → `,`, `=3D` → `=`).
fn unescape(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(err(Failure::MalformedRequest, "bad escape in saslname")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        hash: Hash,
        salt_b64: &str,
        client_first: &str,
        server_nonce: &str,
        client_final: &str,
        server_final: &str,
    ) {
        let salt = B64.decode(salt_b64).expect("salt");
        let keys = ScramKeys::derive(hash, "pencil", &salt, 4096);
        let none = ChannelBindings::default();
        let mut s = ScramServer::start(hash, false, false, &none, client_first.as_bytes())
            .expect("first parses");
        assert_eq!(s.username(), "user");
        let first = s.challenge(Some(keys), b"secret", 4096, server_nonce);
        let nonce = client_final.split(',').nth(1).expect("r=").to_string();
        assert_eq!(
            String::from_utf8(first).expect("utf8"),
            format!("{nonce},s={salt_b64},i=4096")
        );
        let fin = s.finish(client_final.as_bytes()).expect("proof accepted");
        assert_eq!(String::from_utf8(fin).expect("utf8"), server_final);
    }

    #[test]
    fn rfc5802_sha1_vector() {
        run(
            Hash::Sha1,
            "QSXCR+Q6sek8bf92",
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc7677_sha256_vector() {
        run(
            Hash::Sha256,
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    /// A minimal SCRAM client (for tests) computing the proof for `password`.
    fn client_final(
        hash: Hash,
        password: &str,
        first_bare: &str,
        server_first: &str,
        cbind: &[u8],
    ) -> String {
        let mut parts = server_first.split(',');
        let nonce = parts.next().expect("r").trim_start_matches("r=");
        let salt = B64
            .decode(parts.next().expect("s").trim_start_matches("s="))
            .expect("b64");
        let iters: u32 = parts
            .next()
            .expect("i")
            .trim_start_matches("i=")
            .parse()
            .expect("num");
        let salted = super::super::creds::salted_password(hash, password, &salt, iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.digest(&client_key);
        let without = format!("c={},r={nonce}", B64.encode(cbind));
        let auth = format!("{first_bare},{server_first},{without}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        format!("{without},p={}", B64.encode(proof))
    }

    fn bindings() -> ChannelBindings {
        ChannelBindings {
            exporter: Some(vec![7; 32]),
            server_end_point: Some(vec![9; 32]),
        }
    }

    #[test]
    fn plus_with_tls_exporter_binds_to_the_channel() {
        let keys = ScramKeys::derive(Hash::Sha256, "pw", b"saltsaltsaltsalt", 4096);
        let first = "p=tls-exporter,,n=alice,r=abc";
        let mut s = ScramServer::start(Hash::Sha256, true, true, &bindings(), first.as_bytes())
            .expect("ok");
        let sf =
            String::from_utf8(s.challenge(Some(keys.clone()), b"k", 4096, "xyz")).expect("utf8");
        let mut cb = b"p=tls-exporter,,".to_vec();
        cb.extend([7; 32]);
        assert!(s
            .finish(client_final(Hash::Sha256, "pw", "n=alice,r=abc", &sf, &cb).as_bytes())
            .is_ok());

        // Same exchange, but the client saw different keying material (a MITM).
        let mut s = ScramServer::start(Hash::Sha256, true, true, &bindings(), first.as_bytes())
            .expect("ok");
        let sf = String::from_utf8(s.challenge(Some(keys), b"k", 4096, "xyz")).expect("utf8");
        let mut cb = b"p=tls-exporter,,".to_vec();
        cb.extend([8; 32]);
        let e = s.finish(client_final(Hash::Sha256, "pw", "n=alice,r=abc", &sf, &cb).as_bytes());
        assert_eq!(e.map_err(|e| e.0), Err(Failure::NotAuthorized));
    }

    #[test]
    fn plus_with_tls_server_end_point() {
        let keys = ScramKeys::derive(Hash::Sha1, "pw", b"saltsaltsaltsalt", 4096);
        let first = "p=tls-server-end-point,,n=alice,r=abc";
        let mut s =
            ScramServer::start(Hash::Sha1, true, true, &bindings(), first.as_bytes()).expect("ok");
        let sf = String::from_utf8(s.challenge(Some(keys), b"k", 4096, "xyz")).expect("utf8");
        let mut cb = b"p=tls-server-end-point,,".to_vec();
        cb.extend([9; 32]);
        assert!(s
            .finish(client_final(Hash::Sha1, "pw", "n=alice,r=abc", &sf, &cb).as_bytes())
            .is_ok());
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        // Not the common 4096: the fake challenge must follow the configured count.
        let keys = ScramKeys::derive(Hash::Sha256, "right", b"saltsaltsaltsalt", 5000);
        let none = ChannelBindings::default();
        for (keys, pw) in [(Some(keys), "wrong"), (None, "anything")] {
            let mut s = ScramServer::start(Hash::Sha256, false, false, &none, b"n,,n=bob,r=abc")
                .expect("ok");
            let sf = String::from_utf8(s.challenge(keys, b"k", 5000, "xyz")).expect("utf8");
            assert!(
                sf.contains(",i=5000"),
                "unknown accounts look like real ones: {sf}"
            );
            let fin = client_final(Hash::Sha256, pw, "n=bob,r=abc", &sf, b"n,,");
            assert_eq!(
                s.finish(fin.as_bytes()).map_err(|e| e.0),
                Err(Failure::NotAuthorized)
            );
        }
    }

    #[test]
    fn downgrade_and_malformed_gs2_are_refused() {
        let b = bindings();
        let y = ScramServer::start(Hash::Sha1, false, true, &b, b"y,,n=a,r=x");
        assert_eq!(y.err().map(|e| e.0), Some(Failure::NotAuthorized));
        assert!(ScramServer::start(Hash::Sha1, false, false, &b, b"y,,n=a,r=x").is_ok());
        let p = ScramServer::start(Hash::Sha1, false, true, &b, b"p=tls-exporter,,n=a,r=x");
        assert_eq!(p.err().map(|e| e.0), Some(Failure::MalformedRequest));
        let n = ScramServer::start(Hash::Sha1, true, true, &b, b"n,,n=a,r=x");
        assert_eq!(n.err().map(|e| e.0), Some(Failure::NotAuthorized));
        for bad in [
            &b"garbage"[..],
            b"n,,r=x",
            b"n,,n=a",
            b"n,,n=a=ZZ,r=x",
            b"n,x,n=a,r=x",
            b"n,,n=,r=x",
        ] {
            assert!(
                ScramServer::start(Hash::Sha1, false, false, &b, bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn saslname_escapes() {
        assert_eq!(unescape("a=2Cb=3Dc").expect("valid"), "a,b=c");
        assert!(unescape("a=2").is_err());
    }
}
