//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.

use super::Failure;

/// Split a PLAIN message into (authzid, username, password).
pub fn parse_plain(msg: &[u8]) -> Result<(Option<String>, String, String), Failure> {
    let text = std::str::from_utf8(msg).map_err(|_| Failure::MalformedRequest)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    if authcid.is_empty() || passwd.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let authzid = (!authzid.is_empty()).then(|| authzid.to_string());
    Ok((authzid, authcid.to_string(), passwd.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_fields() {
        let (z, u, p) = parse_plain(b"\0alice\0secret").expect("valid");
        assert_eq!((z, u.as_str(), p.as_str()), (None, "alice", "secret"));
        let (z, _, _) = parse_plain(b"alice@localhost\0alice\0secret").expect("valid");
        assert_eq!(z.as_deref(), Some("alice@localhost"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"alice\0secret"[..],
            b"\0\0secret",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\0a\0\xff",
        ] {
            assert_eq!(parse_plain(bad), Err(Failure::MalformedRequest), "{bad:?}");
        }
    }
}
