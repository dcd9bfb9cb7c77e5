//! HTTP File Upload (XEP-0363), what an HTTP client controls: a PUT URL's
//! query (`put_query`) and slot signature check, the PUT's `Content-Length`
//! and `Content-Type` (`check_put_headers`), a GET's `Range` (`parse_range`),
//! and the slot's file name and type rules.
//!
//! Input: a control byte (the slot's size), then fields separated by 0xFF:
//! the query, Content-Length, Content-Type, Range, a file name, an owner.
//!
//! Properties: a slot URL the server signs parses back into the same slot and
//! verifies (whatever file name, type and owner it carries); headers are
//! accepted only with the slot's exact length; a satisfiable range lies
//! within the file.

#![no_main]

use axum::http::{header, HeaderMap, HeaderValue, Uri};
use kith_fuzz::fields;
use kith_server::fuzzing::{
    content_type_or_default, upload_put_url, upload_slot_ok, valid_filename,
};
use kith_server::PutQuery;
use kith_web::fuzzing::{check_put_headers, parse_range, put_query};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ID: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let size = u64::from(control) * 1000 + u64::from(control % 7);
    let f = fields(rest, 0xff);
    let field = |i: usize| f.get(i).copied().unwrap_or_default();
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();

    // A PUT whose query the client wrote.
    if let Ok(uri) = Uri::try_from(format!("/upload/{ID}/f.txt?{}", text(0))) {
        if let Some(q) = put_query(&uri) {
            let _ = upload_slot_ok(SECRET, ID, "f.txt", &q);
        }
    }

    // The headers of the PUT.
    let content_type = content_type_or_default(Some(&text(2)));
    let mut headers = HeaderMap::new();
    for (name, i) in [(header::CONTENT_LENGTH, 1), (header::CONTENT_TYPE, 2)] {
        if let Ok(v) = HeaderValue::from_bytes(field(i)) {
            headers.insert(name, v);
        }
    }
    if check_put_headers(&headers, size, &content_type).is_ok() {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(length, Some(size), "accepted {headers:?} for {size} bytes");
    }

    // A GET's range.
    if let Some((a, b)) = parse_range(&text(3), size) {
        assert!(
            a <= b && b < size,
            "range {a}-{b} of {size} from {:?}",
            text(3)
        );
    }

    // A slot the server hands out, through its URL and back.
    let filename = text(4);
    if valid_filename(&filename) {
        let slot = PutQuery {
            size,
            content_type,
            owner: text(5),
            expires: i64::from(control) * 1_000_003 - 77,
            sig: String::new(),
        };
        let url = upload_put_url("https://kith.example", SECRET, ID, &filename, &slot);
        let uri = Uri::try_from(url.as_str());
        assert!(uri.is_ok(), "the server made an invalid URL {url:?}");
        let back = uri.ok().as_ref().and_then(put_query);
        let Some(back) = back else {
            panic!("the slot URL {url:?} does not parse back");
        };
        assert_eq!(
            (back.size, &back.content_type, &back.owner, back.expires),
            (slot.size, &slot.content_type, &slot.owner, slot.expires),
            "{url:?}"
        );
        assert!(
            upload_slot_ok(SECRET, ID, &filename, &back),
            "the slot URL {url:?} does not verify"
        );
    }
});
