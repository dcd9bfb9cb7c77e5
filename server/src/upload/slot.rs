//! Slot URLs (XEP-0363): what a slot grants is written into its PUT URL and
//! signed with HMAC-SHA-256 under a server secret, so a slot needs no stored
//! state and any change to the URL (another size, type, owner, expiry or
//! file) makes the signature wrong.
//!
//! PUT `{base}/upload/{id}/{filename}?size=…&type=…&owner=…&expires=…&sig=…`
//! GET `{base}/upload/{id}/{filename}`

use ring::hmac;

/// What a slot allows: one PUT of exactly `size` bytes before `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    /// The account (local part) the file counts against.
    pub owner: String,
    /// Unix seconds.
    pub expires: i64,
}

impl Slot {
    fn message(&self) -> String {
        format!(
            "kith-upload-v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.id, self.filename, self.size, self.content_type, self.owner, self.expires
        )
    }

    /// The hex HMAC of this slot.
    pub fn sign(&self, secret: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hex(hmac::sign(&key, self.message().as_bytes()).as_ref())
    }

    /// Whether `sig` (hex) is this slot's signature; constant time.
    pub fn verify(&self, secret: &[u8], sig: &str) -> bool {
        let Some(raw) = unhex(sig) else { return false };
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, self.message().as_bytes(), &raw).is_ok()
    }

    /// The GET URL under `base`.
    pub fn get_url(&self, base: &str) -> String {
        format!(
            "{}/upload/{}/{}",
            base.trim_end_matches('/'),
            self.id,
            encode(&self.filename)
        )
    }

    /// The signed PUT URL under `base`.
    pub fn put_url(&self, base: &str, secret: &[u8]) -> String {
        format!(
            "{}?size={}&type={}&owner={}&expires={}&sig={}",
            self.get_url(base),
            self.size,
            encode(&self.content_type),
            encode(&self.owner),
            self.expires,
            self.sign(secret)
        )
    }
}

/// A file name a slot may carry: 1–200 bytes, no path separators, no
/// control characters, not `.` or `..`.
pub fn valid_filename(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// A MIME type a slot may carry (`type/subtype`, token characters, ≤ 100
/// bytes); anything else is stored as `application/octet-stream`.
pub fn content_type_or_default(ct: Option<&str>) -> String {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match ct.map(str::trim) {
        Some(t)
            if t.len() <= 100 && t.split_once('/').is_some_and(|(a, b)| token(a) && token(b)) =>
        {
            t.to_ascii_lowercase()
        }
        _ => "application/octet-stream".to_string(),
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            id: "abc".into(),
            filename: "cat picture.jpg".into(),
            size: 1234,
            content_type: "image/jpeg".into(),
            owner: "alice".into(),
            expires: 1_900_000_000,
        }
    }

    #[test]
    fn a_signature_covers_every_field() {
        let s = slot();
        let sig = s.sign(b"secret");
        assert!(s.verify(b"secret", &sig));
        assert!(!s.verify(b"other", &sig));
        let mut t = s.clone();
        t.size += 1;
        assert!(!t.verify(b"secret", &sig));
        let mut t = s.clone();
        t.expires += 1;
        assert!(!t.verify(b"secret", &sig));
        assert!(!s.verify(b"secret", "zz"));
    }

    #[test]
    fn urls_are_encoded() {
        let s = slot();
        assert_eq!(
            s.get_url("https://kith.example/"),
            "https://kith.example/upload/abc/cat%20picture.jpg"
        );
        assert!(s
            .put_url("https://kith.example", b"k")
            .contains("?size=1234&type=image%2Fjpeg&owner=alice&expires=1900000000&sig="));
    }

    #[test]
    fn names_and_types_are_checked() {
        assert!(valid_filename("photo.jpg"));
        assert!(!valid_filename("../etc/passwd"));
        assert!(!valid_filename(".."));
        assert!(!valid_filename(""));
        assert_eq!(content_type_or_default(Some("Image/PNG")), "image/png");
        assert_eq!(
            content_type_or_default(Some("text/html\r\nX: y")),
            "application/octet-stream"
        );
        assert_eq!(content_type_or_default(None), "application/octet-stream");
    }
}
