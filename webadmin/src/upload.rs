//! HTTP File Upload (XEP-0363), the HTTP half: `PUT` to a signed slot URL,
//! `GET` (and `HEAD`) of stored files with ranges, CORS for other origins.
//!
//! A PUT must match its slot exactly (`Content-Length` = the slot's size, the
//! slot's `Content-Type`); the body is streamed to a temporary file, never
//! held in memory, each chunk within [`CHUNK_TIMEOUT`]; the file is synced
//! and renamed into place before it is recorded, so a crash never leaves a
//! half file that is served. Answers: `201` stored, `403` bad or expired
//! slot, `409` slot already used, `413` over the slot size or the quota,
//! `400` length or type mismatch, `408` a stalled body.
//!
//! GET answers with the stored `Content-Type`, a `Content-Disposition`
//! (`inline` for images, audio and video, else `attachment`), single byte
//! ranges (`206`/`416`), and a sandboxing CSP so an uploaded HTML file can
//! never run script on this origin.

use std::io::SeekFrom;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kith_server::{PutQuery, PutRefused};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::headers::cors;
use crate::routes::AppState;

/// Longest wait for the next piece of a PUT body (slow-body attacks).
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// CSP for served files: nothing runs, nothing loads.
const FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// The query of a signed PUT URL.
#[derive(Debug, Deserialize)]
pub struct PutParams {
    size: u64,
    #[serde(rename = "type")]
    content_type: String,
    owner: String,
    expires: i64,
    sig: String,
}

fn status(code: StatusCode, text: &'static str) -> Response {
    cors((code, format!("{text}\n")).into_response())
}

/// `OPTIONS`: the CORS preflight for clients on other origins.
pub async fn preflight() -> Response {
    crate::headers::preflight("GET, HEAD, PUT, OPTIONS")
}

/// `PUT /upload/{id}/{filename}?size=…&type=…&owner=…&expires=…&sig=…`
pub async fn put(
    State(state): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(q) = put_query(&uri) else {
        return status(StatusCode::FORBIDDEN, "not a valid upload slot");
    };
    let uploads = state.xmpp.uploads();
    let grant = match uploads.authorize_put(&id, &filename, q).await {
        Ok(g) => g,
        Err(e) => return refused(e),
    };
    if let Err(e) = check_put_headers(&headers, grant.size(), grant.content_type()) {
        return status(e.status(), e.text());
    }
    let mut file = match uploads.create_tmp(&grant).await {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    let failure = loop {
        match tokio::time::timeout(CHUNK_TIMEOUT, stream.next()).await {
            Err(_) => break Some(status(StatusCode::REQUEST_TIMEOUT, "the upload stalled")),
            Ok(None) => break None,
            Ok(Some(Err(_))) => {
                break Some(status(StatusCode::BAD_REQUEST, "the upload broke off"))
            }
            Ok(Some(Ok(chunk))) => {
                written += chunk.len() as u64;
                if written > grant.size() {
                    break Some(status(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "larger than the slot",
                    ));
                }
                if file.write_all(&chunk).await.is_err() {
                    break Some(status(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "cannot store the file",
                    ));
                }
            }
        }
    };
    let failure = failure.or_else(|| {
        (written != grant.size()).then(|| status(StatusCode::BAD_REQUEST, "shorter than the slot"))
    });
    if let Some(resp) = failure {
        drop(file);
        uploads.abort(&grant).await;
        return resp;
    }
    if file.sync_all().await.is_err() {
        drop(file);
        uploads.abort(&grant).await;
        return status(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file");
    }
    drop(file);
    match uploads.commit(&grant).await {
        Ok(()) => status(StatusCode::CREATED, "stored"),
        Err(e) => refused(e),
    }
}

/// The slot a PUT URL's query claims (`size`, `type`, `owner`, `expires`,
/// `sig`); `None` if one is missing or malformed. Also used by the fuzz targets.
pub fn put_query(uri: &Uri) -> Option<PutQuery> {
    let Query(p) = Query::<PutParams>::try_from_uri(uri).ok()?;
    Some(PutQuery {
        size: p.size,
        content_type: p.content_type,
        owner: p.owner,
        expires: p.expires,
        sig: p.sig,
    })
}

/// Why a PUT's headers do not fit its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMismatch {
    /// `Content-Length` is larger than the slot.
    TooLarge,
    /// `Content-Length` is missing, malformed or smaller than the slot.
    Length,
    /// `Content-Type` differs from the slot's.
    ContentType,
}

impl HeaderMismatch {
    fn status(self) -> StatusCode {
        match self {
            HeaderMismatch::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HeaderMismatch::Length | HeaderMismatch::ContentType => StatusCode::BAD_REQUEST,
        }
    }

    fn text(self) -> &'static str {
        match self {
            HeaderMismatch::TooLarge => "larger than the slot",
            HeaderMismatch::Length => "Content-Length must be the slot's size",
            HeaderMismatch::ContentType => "Content-Type differs from the slot's",
        }
    }
}

/// Check a PUT's `Content-Length` (exactly the slot's `size`) and
/// `Content-Type` (the slot's, parameters ignored, unless the slot is
/// `application/octet-stream`; absent is fine). Also used by the fuzz targets.
pub fn check_put_headers(
    headers: &HeaderMap,
    size: u64,
    content_type: &str,
) -> Result<(), HeaderMismatch> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n == size => {}
        Some(n) if n > size => return Err(HeaderMismatch::TooLarge),
        _ => return Err(HeaderMismatch::Length),
    }
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if content_type != "application/octet-stream" && ct != content_type {
            return Err(HeaderMismatch::ContentType);
        }
    }
    Ok(())
}

fn refused(e: PutRefused) -> Response {
    match e {
        PutRefused::BadSignature => status(StatusCode::FORBIDDEN, "not a valid upload slot"),
        PutRefused::Expired => status(StatusCode::FORBIDDEN, "the upload slot has expired"),
        PutRefused::Exists => status(StatusCode::CONFLICT, "this slot was already used"),
        PutRefused::OverQuota => status(StatusCode::PAYLOAD_TOO_LARGE, "over your upload quota"),
        PutRefused::Storage => status(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file"),
    }
}

/// `GET /upload/{id}/{filename}` (and `HEAD`).
pub async fn get(
    State(state): State<AppState>,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(f) = state.xmpp.uploads().get(&id, &filename).await else {
        return status(StatusCode::NOT_FOUND, "no such file");
    };
    let Ok(mut file) = tokio::fs::File::open(&f.path).await else {
        return status(StatusCode::NOT_FOUND, "no such file");
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, f.size));
    let (code, start, len) = match range {
        None => (StatusCode::OK, 0, f.size),
        Some(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Some(None) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", f.size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file");
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut r = Response::new(body);
    *r.status_mut() = code;
    let h = r.headers_mut();
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| f.content_type.starts_with(p));
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        encode(&f.filename)
    );
    for (name, value) in [
        (header::CONTENT_TYPE, f.content_type.clone()),
        (header::CONTENT_LENGTH, len.to_string()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CONTENT_SECURITY_POLICY, FILE_CSP.to_string()),
        (header::CACHE_CONTROL, "private, max-age=86400".to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if code == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, f.size))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    cors(r)
}

/// One byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) as inclusive
/// bounds within `size`; `None` if unsatisfiable or not a single range.
/// Also used by the fuzz targets.
pub fn parse_range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let r = spec.trim().strip_prefix("bytes=")?;
    if r.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = r.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().ok()?.min(size - 1)
    };
    (start <= end).then_some((start, end))
}

/// Percent-encoding for `filename*` (RFC 8187).
fn encode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
