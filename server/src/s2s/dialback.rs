//! Dialback keys (XEP-0185): `HMAC-SHA256(SHA256(secret), receiving + ' ' +
//! originating + ' ' + stream id)`, hex. Only a server that knows the secret
//! (this process) can produce the key for a stream id it was given.

/// The key for a stream `id` that `originating` (us) opened to `receiving`.
pub fn key(secret: &[u8], receiving: &str, originating: &str, id: &str) -> String {
    let hashed = ring::digest::digest(&ring::digest::SHA256, secret);
    let hashed_hex = hex(hashed.as_ref());
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hashed_hex.as_bytes());
    let tag = ring::hmac::sign(&k, format!("{receiving} {originating} {id}").as_bytes());
    hex(tag.as_ref())
}

/// Constant-time comparison of a presented key with the expected one.
pub fn matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len()
        && bool::from(expected.as_bytes().ct_eq(presented.trim().as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of XEP-0185 (receiving xmpp.example.com, originating example.org).
    #[test]
    fn xep_0185_example() {
        let k = key(
            b"s3cr3tf0rd14lb4ck",
            "xmpp.example.com",
            "example.org",
            "D60000229F",
        );
        assert_eq!(
            k,
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
        assert!(matches(&k, &k));
        assert!(!matches(&k, "00"));
    }
}
