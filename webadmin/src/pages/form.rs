//! Bounded form parsing: every form body is read up to [`FORM_BYTES`] and
//! parsed once into its typed struct; anything else is an error page.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::{PageError, Problem};
use crate::i18n::Lang;

/// The largest form body any page accepts (the biggest has three password
/// fields of at most 1 KiB each).
pub const FORM_BYTES: usize = 16 * 1024;

/// Read and parse an `application/x-www-form-urlencoded` body into `T`:
/// `415` for another type, `413` past [`FORM_BYTES`], `400` when it does not
/// parse (a missing or repeated field, bad percent-encoding, not UTF-8).
pub async fn read_form<T: DeserializeOwned>(
    lang: Lang,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, PageError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(PageError::new(
            lang,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::BadForm,
        ));
    }
    let bytes = axum::body::to_bytes(body, FORM_BYTES)
        .await
        .map_err(|_| PageError::new(lang, StatusCode::PAYLOAD_TOO_LARGE, Problem::TooLarge))?;
    parse(&bytes).ok_or(PageError::new(
        lang,
        StatusCode::BAD_REQUEST,
        Problem::BadForm,
    ))
}

/// Parse a form body (no size check).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    if std::str::from_utf8(bytes).is_err() {
        return None;
    }
    serde_urlencoded::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct SignIn {
        address: String,
        #[allow(dead_code)]
        password: String,
        remember: Option<String>,
    }

    #[test]
    fn forms_parse_into_their_struct_or_not_at_all() {
        let f: SignIn = parse(b"address=alice%40x&password=p+w&remember=on").expect("parses");
        assert_eq!(f.address, "alice@x");
        assert_eq!(f.remember.as_deref(), Some("on"));
        assert!(parse::<SignIn>(b"address=a").is_none());
        // Percent-encoded bytes that are not UTF-8 become U+FFFD (browsers
        // always send UTF-8); raw bytes that are not UTF-8 are refused.
        let lossy: SignIn = parse(b"address=%ff&password=x").expect("parses");
        assert_eq!(lossy.address, "\u{fffd}");
        assert!(parse::<SignIn>(b"\xff\xfe").is_none());
        assert!(parse::<SignIn>(b"address=a&address=b&password=x").is_none());
    }
}
