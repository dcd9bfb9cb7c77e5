//! The browser code and the stylesheet, embedded in the binary at build time
//! from `webadmin/client/dist/` (made by `webadmin/client/build.sh` from
//! pinned npm packages and committed, so a fresh clone and the image's cross
//! build need no node). Each is served under a name carrying a hash of its
//! content (`/assets/app.3f2a…js`), so it can be cached for a year: a new
//! build has new names.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct Asset {
    /// The name pages link to: `app.<hash>.js`.
    pub name: String,
    content_type: &'static str,
    body: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static [u8]) -> Asset {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let hash: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Asset {
            name: format!("{stem}.{hash}.{ext}"),
            content_type,
            body,
        }
    }

    /// The URL path pages use.
    pub fn path(&self) -> String {
        format!("/assets/{}", self.name)
    }
}

/// The bundled script (htmx, its SSE extension, the pages' modules).
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../client/dist/app.js"),
    )
});

/// The stylesheet.
pub static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../client/dist/app.css"),
    )
});

/// `GET /assets/{name}`: an embedded file by its hashed name, cacheable for
/// a year; any other name is `404`.
pub async fn get(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*SCRIPT, &*STYLE].into_iter().find(|a| a.name == name) else {
        return crate::pages::not_found_plain();
    };
    let mut r = (StatusCode::OK, asset.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        assert!(SCRIPT.name.starts_with("app.") && SCRIPT.name.ends_with(".js"));
        assert_eq!(SCRIPT.name.len(), "app..js".len() + 16);
        assert_ne!(SCRIPT.name, STYLE.name);
        assert!(!SCRIPT.body.is_empty() && !STYLE.body.is_empty());
    }
}
