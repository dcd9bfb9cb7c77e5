//! The web shell every page stands on: who is visiting (a signed-in
//! browser or not, in which language), the CSRF check of every form, bounded
//! form parsing, and errors rendered as pages. Each area of pages is a
//! submodule with its routes and templates (`templates/`); `shell` holds the
//! sign-in, sign-out, "your browsers" and "change password" pages.

mod browser;
mod form;
pub mod shell;

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use kith_server::{Role, WebHandle, WebSession};
use ring::hmac;
use tokio::sync::watch;

use crate::i18n::{Lang, Text};
use crate::live::Live;

pub use form::read_form;

/// The cookie naming a signed-in browser's session (`__Host-`: only this
/// origin, only over HTTPS, never a subdomain's).
pub const SESSION_COOKIE: &str = "__Host-kith-session";
/// A random value every browser gets before it signs in; the sign-in form's
/// CSRF token is bound to it.
pub const PRE_COOKIE: &str = "__Host-kith-pre";
/// The language picked on a page.
pub const LANG_COOKIE: &str = "__Host-kith-lang";

/// How long "remember this browser" keeps a browser signed in after its
/// last visit.
pub const REMEMBER_SECS: i64 = 30 * 24 * 3600;
/// How long a browser that is not remembered stays signed in after its last
/// visit (its cookie also ends when the browser closes).
pub const SESSION_IDLE_SECS: i64 = 12 * 3600;
/// A session's last use is written at most this often.
const TOUCH_EVERY_SECS: i64 = 60;

/// What the pages share: the CSRF key, the live-update hub, shutdown.
pub struct Shell {
    csrf_key: hmac::Key,
    pub live: Live,
    pub shutdown: watch::Receiver<bool>,
}

impl Shell {
    /// A shell with a fresh CSRF key (forms rendered before a restart are
    /// refused after it: the page says to reload).
    pub fn new(shutdown: watch::Receiver<bool>) -> Arc<Shell> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // No system randomness: no secure page can be served anyway;
            // forms will be refused as the sessions cannot be created either.
            tracing::error!("the system random number generator failed");
            hmac::Key::new(hmac::HMAC_SHA256, &[0; 32])
        });
        Arc::new(Shell {
            csrf_key: key,
            live: Live::default(),
            shutdown,
        })
    }

    fn csrf_token(&self, binder: &[u8]) -> String {
        B64.encode(hmac::sign(&self.csrf_key, binder).as_ref())
    }

    /// The CSRF token of forms on a signed-in browser's pages.
    pub fn csrf_session(&self, token_hash: &[u8]) -> String {
        self.csrf_token(&binder_session(token_hash))
    }

    fn csrf_ok(&self, binder: &[u8], token: &str) -> bool {
        match B64.decode(token.as_bytes()) {
            Ok(tag) => hmac::verify(&self.csrf_key, binder, &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// `len` random bytes, base64url.
pub fn random_token(len: usize) -> Option<String> {
    let mut buf = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).ok()?;
    Some(B64.encode(buf))
}

/// SHA-256 of a session token, as stored.
pub fn token_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A signed-in browser on this request.
#[derive(Clone)]
pub struct SignedIn {
    pub session: WebSession,
    pub role: Role,
    /// `alice@DOMAIN`.
    pub jid: String,
}

/// Who is asking: their language, their session if signed in, and the
/// pre-sign-in value the sign-in form's CSRF token is bound to.
pub struct Visitor {
    pub lang: Lang,
    pub signed_in: Option<SignedIn>,
    /// The browser's `PRE_COOKIE`, or a new one to set.
    pre: String,
    set_pre: bool,
    /// The session cookie named a session that no longer exists: clear it.
    clear_session: bool,
}

/// The value of cookie `name` in `headers`, if well-formed (bounded: at
/// most 64 cookies and 256 bytes of value are looked at).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .take(64)
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 256
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The language for this request: the cookie, else `Accept-Language`, else English.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::from_tag)
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 512)
                .and_then(Lang::from_accept)
        })
        .unwrap_or(Lang::En)
}

impl Visitor {
    /// Look the visitor up: the language, and the session its cookie names
    /// (extending it when due).
    pub async fn load(xmpp: &WebHandle, headers: &HeaderMap) -> Result<Visitor, PageError> {
        let lang = lang_of(headers);
        let (pre, set_pre) = match cookie(headers, PRE_COOKIE) {
            Some(p) => (p.to_string(), false),
            None => (random_token(32).ok_or(PageError::unavailable(lang))?, true),
        };
        let mut v = Visitor {
            lang,
            signed_in: None,
            pre,
            set_pre,
            clear_session: false,
        };
        let Some(token) = cookie(headers, SESSION_COOKIE) else {
            return Ok(v);
        };
        let hash = token_hash(token);
        let now = now();
        let unavailable = |e: kith_server::AccountError| {
            tracing::error!(error = %e, "reading a web session failed");
            PageError::unavailable(lang)
        };
        let Some(session) = xmpp.web_session(&hash, now).await.map_err(unavailable)? else {
            v.clear_session = true;
            return Ok(v);
        };
        let Some(role) = xmpp
            .account_role(&session.username)
            .await
            .map_err(unavailable)?
        else {
            // The account was deleted.
            let _ = xmpp.web_session_end(&hash).await;
            v.clear_session = true;
            return Ok(v);
        };
        if now - session.last_seen >= TOUCH_EVERY_SECS {
            let life = if session.remember {
                REMEMBER_SECS
            } else {
                SESSION_IDLE_SECS
            };
            if let Err(e) = xmpp.web_session_touch(&hash, now, now + life).await {
                tracing::warn!(error = %e, "recording a web session's use failed");
            }
        }
        v.signed_in = Some(SignedIn {
            jid: format!("{}@{}", session.username, xmpp.domain()),
            session,
            role,
        });
        Ok(v)
    }

    /// The words of the visitor's language.
    pub fn t(&self) -> &'static Text {
        self.lang.text()
    }

    /// The CSRF token forms on this visitor's pages carry.
    pub fn csrf(&self, shell: &Shell) -> String {
        match &self.signed_in {
            Some(s) => shell.csrf_token(&binder_session(&s.session.token_hash)),
            None => shell.csrf_token(&binder_pre(&self.pre)),
        }
    }

    /// Refuse a state-changing request that did not come from this box's own
    /// page: its `Sec-Fetch-Site` or `Origin` says another site, or its
    /// token is not this browser's. A signed-in browser's token is bound to
    /// its session; a signed-out one's to its pre-sign-in cookie (a token
    /// from a page rendered before signing in is still accepted right after).
    pub fn check_csrf(
        &self,
        shell: &Shell,
        headers: &HeaderMap,
        authority: &str,
        token: Option<&str>,
    ) -> Result<(), PageError> {
        let refuse = Err(PageError::new(
            self.lang,
            StatusCode::FORBIDDEN,
            Problem::Csrf,
        ));
        if let Some(site) = headers.get("sec-fetch-site") {
            if !matches!(site.as_bytes(), b"same-origin" | b"none") {
                return refuse;
            }
        }
        // Under `Referrer-Policy: no-referrer` browsers send `Origin: null`
        // with their own forms; `Sec-Fetch-Site` above and the token decide then.
        if let Some(origin) = headers
            .get(header::ORIGIN)
            .filter(|o| o.as_bytes() != b"null")
        {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| {
                    o.strip_prefix("https://")
                        .or_else(|| o.strip_prefix("http://"))
                })
                .is_some_and(|host| host.eq_ignore_ascii_case(authority));
            if !same {
                return refuse;
            }
        }
        let header_token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let Some(token) = token.or(header_token).filter(|t| t.len() <= 128) else {
            return refuse;
        };
        let by_session = self
            .signed_in
            .as_ref()
            .is_some_and(|s| shell.csrf_ok(&binder_session(&s.session.token_hash), token));
        if by_session || shell.csrf_ok(&binder_pre(&self.pre), token) {
            Ok(())
        } else {
            refuse
        }
    }

    /// Add the cookies this visit must set to `r` (a new pre-sign-in value,
    /// clearing a stale session cookie).
    pub fn finish(&self, mut r: Response) -> Response {
        if self.set_pre {
            set_cookie(&mut r, &pre_cookie(&self.pre));
        }
        if self.clear_session {
            set_cookie(&mut r, &clear_cookie(SESSION_COOKIE));
        }
        r
    }
}

fn binder_session(token_hash: &[u8]) -> Vec<u8> {
    [b"session:".as_slice(), token_hash].concat()
}

fn binder_pre(pre: &str) -> Vec<u8> {
    [b"pre:".as_slice(), pre.as_bytes()].concat()
}

/// Append a `Set-Cookie` header.
pub fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The session cookie: HttpOnly, Secure, SameSite=Lax (a link from
/// elsewhere opens the page signed in; a form from elsewhere is refused by
/// the CSRF check), for the browser's life or `max_age` seconds.
pub fn session_cookie(token: &str, max_age: Option<i64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax{age}")
}

fn pre_cookie(pre: &str) -> String {
    format!("{PRE_COOKIE}={pre}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// A cookie that deletes `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The language cookie, for a year.
pub fn lang_cookie(lang: Lang) -> String {
    format!(
        "{LANG_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=31536000",
        lang.tag()
    )
}

/// `host[:port]` the request was sent to (HTTP/1.1 `Host`, HTTP/2
/// `:authority`), for the same-origin check.
pub fn authority(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

/// The client's address.
pub fn peer_ip(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// `303 See Other` to `to`.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// What every page's layout needs.
pub struct Ctx {
    pub lang: Lang,
    pub t: &'static Text,
    pub csrf: String,
    /// The signed-in account, for the header.
    pub user: Option<String>,
    /// This page's path, for the language form to come back to.
    pub path: &'static str,
    pub script: String,
    pub style: String,
    pub langs: [Lang; 2],
}

impl Ctx {
    pub fn new(v: &Visitor, shell: &Shell, path: &'static str) -> Ctx {
        Ctx {
            lang: v.lang,
            t: v.t(),
            csrf: v.csrf(shell),
            user: v.signed_in.as_ref().map(|s| s.jid.clone()),
            path,
            script: crate::assets::SCRIPT.path(),
            style: crate::assets::STYLE.path(),
            langs: Lang::ALL,
        }
    }
}

/// Render `t` as an HTML page with `status`, never caching it.
pub fn html<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// What went wrong, in the words of the error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotFound,
    Csrf,
    BadForm,
    TooLarge,
    Unavailable,
    SignInFirst,
}

/// An error answered with a page (never a stack trace or a bare status).
#[derive(Debug)]
pub struct PageError {
    lang: Lang,
    status: StatusCode,
    problem: Problem,
}

impl PageError {
    pub fn new(lang: Lang, status: StatusCode, problem: Problem) -> Self {
        PageError {
            lang,
            status,
            problem,
        }
    }

    pub fn unavailable(lang: Lang) -> Self {
        Self::new(lang, StatusCode::SERVICE_UNAVAILABLE, Problem::Unavailable)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    p: Ctx,
    message: &'static str,
}

/// The error page for `problem` in `lang`.
pub fn error_page(lang: Lang, status: StatusCode, problem: Problem) -> Response {
    let t = lang.text();
    let message = match problem {
        Problem::NotFound => t.error_not_found,
        Problem::Csrf => t.error_csrf,
        Problem::BadForm => t.error_bad_form,
        Problem::TooLarge => t.error_too_large,
        Problem::Unavailable => t.error_unavailable,
        Problem::SignInFirst => t.error_sign_in_first,
    };
    let p = Ctx {
        lang,
        t,
        csrf: String::new(),
        user: None,
        path: "/",
        script: crate::assets::SCRIPT.path(),
        style: crate::assets::STYLE.path(),
        langs: Lang::ALL,
    };
    html(status, &ErrorPage { p, message })
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(self.lang, self.status, self.problem)
    }
}

/// The fallback: a `404` page.
pub async fn not_found(headers: HeaderMap) -> Response {
    error_page(lang_of(&headers), StatusCode::NOT_FOUND, Problem::NotFound)
}

/// A `404` with no page (unknown assets).
pub fn not_found_plain() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// Middleware for the pages: an error answer without a body of its own (a
/// timeout, a body over the limit, a method not allowed) becomes a page.
pub async fn error_pages(req: Request, next: Next) -> Response {
    let lang = lang_of(req.headers());
    let r = next.run(req).await;
    let status = r.status();
    let has_type = r.headers().contains_key(header::CONTENT_TYPE)
        && !r
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || has_type {
        return r;
    }
    let problem = match status {
        StatusCode::NOT_FOUND => Problem::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => Problem::TooLarge,
        s if s.is_server_error()
            || s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::TOO_MANY_REQUESTS =>
        {
            Problem::Unavailable
        }
        _ => Problem::BadForm,
    };
    let mut page = error_page(lang, status, problem);
    // Keep what the original answer said about the connection or retrying.
    for name in [header::ALLOW, header::RETRY_AFTER, header::CONNECTION] {
        if let Some(v) = r.headers().get(&name) {
            page.headers_mut().insert(name, v.clone());
        }
    }
    page
}
