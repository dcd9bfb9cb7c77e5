//! Sign-in and sign-out at `/`, the list of an account's signed-in browsers
//! (`/browsers`), the password change (`/password`), the language choice
//! (`/language`) and the live-update stream (`/events`). Handlers are thin:
//! load the visitor, parse the form, check CSRF, call `kith-server`, render.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kith_server::{PasswordChangeError, PasswordRefused, WebHandle, WebSession};
use serde::Deserialize;

use super::{
    authority, clear_cookie, html, lang_cookie, now, peer_ip, random_token, read_form, see_other,
    session_cookie, set_cookie, token_hash, Ctx, PageError, Problem, Shell, SignedIn, Visitor,
    REMEMBER_SECS, SESSION_COOKIE, SESSION_IDLE_SECS,
};
use crate::i18n::{Lang, Text};
use crate::live::LiveEvent;
use crate::routes::AppState;

/// The shell's routes (under the pages' limits).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/browsers", get(browsers))
        .route("/browsers/sign-out", post(sign_out_browser))
        .route("/browsers/sign-out-everywhere", post(sign_out_everywhere))
        .route("/password", get(password_page).post(change_password))
        .route("/language", post(language))
}

/// The live-update stream (no request timeout: it stays open).
pub fn live_routes() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

/// A notice after a redirect, named in the query (`?done=signed-out`): only
/// these words are ever shown, nothing from the URL is echoed.
fn notice(t: &'static Text, query: Option<&str>) -> Option<&'static str> {
    let done = query?.split('&').find_map(|kv| kv.strip_prefix("done="))?;
    Some(match done {
        "signed-out" => t.notice_signed_out,
        "signed-out-everywhere" => t.notice_signed_out_everywhere,
        "browser-signed-out" => t.notice_browser_signed_out,
        "password-changed" => t.notice_password_changed,
        _ => return None,
    })
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    p: Ctx,
    notice: Option<&'static str>,
    address: &'a str,
    remember: bool,
    address_error: Option<&'static str>,
    password_error: Option<&'static str>,
    form_error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    p: Ctx,
    notice: Option<&'static str>,
    role: &'static str,
}

fn sign_in_page(v: &Visitor, shell: &Shell, status: StatusCode, page: SignInForm<'_>) -> Response {
    v.finish(html(
        status,
        &SignInPage {
            p: Ctx::new(v, shell, "/"),
            notice: page.notice,
            address: page.address,
            remember: page.remember,
            address_error: page.address_error,
            password_error: page.password_error,
            form_error: page.form_error,
        },
    ))
}

#[derive(Default)]
struct SignInForm<'a> {
    notice: Option<&'static str>,
    address: &'a str,
    remember: bool,
    address_error: Option<&'static str>,
    password_error: Option<&'static str>,
    form_error: Option<&'static str>,
}

/// `GET /`: the home page when signed in, else the sign-in form.
async fn home(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let v = Visitor::load(&st.xmpp, req.headers()).await?;
    let notice = notice(v.t(), req.uri().query());
    Ok(match &v.signed_in {
        Some(s) => {
            let t = v.t();
            let role = match s.role {
                kith_server::Role::Admin => t.role_admin,
                kith_server::Role::Member => t.role_member,
            };
            v.finish(html(
                StatusCode::OK,
                &HomePage {
                    p: Ctx::new(&v, &st.shell, "/"),
                    notice,
                    role,
                },
            ))
        }
        None => sign_in_page(
            &v,
            &st.shell,
            StatusCode::OK,
            SignInForm {
                notice,
                ..Default::default()
            },
        ),
    })
}

#[derive(Deserialize)]
struct SignInFields {
    csrf: Option<String>,
    address: String,
    password: String,
    remember: Option<String>,
}

/// `POST /sign-in`: check the password through `kith-server` (the login
/// limits of XMPP), then start a new session with a new random id.
async fn sign_in(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let (v, f, parts) = checked_form::<SignInFields>(&st, req).await?;
    let t = v.t();
    let remember = f.remember.is_some();
    let address = f.address.trim();
    let mut form = SignInForm {
        address,
        remember,
        ..Default::default()
    };
    if address.is_empty() || f.password.is_empty() {
        form.address_error = address.is_empty().then_some(t.address_required);
        form.password_error = f.password.is_empty().then_some(t.password_required);
        return Ok(sign_in_page(&v, &st.shell, StatusCode::BAD_REQUEST, form));
    }
    let ip = peer_ip(&parts.extensions);
    let account = match st.xmpp.verify_password(ip, address, &f.password).await {
        Ok(a) => a,
        Err(refused) => {
            let status = match refused {
                PasswordRefused::Wrong => StatusCode::UNAUTHORIZED,
                PasswordRefused::TooManyFromAddress | PasswordRefused::TooManyForAccount => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                PasswordRefused::Unavailable => return Err(PageError::unavailable(v.lang)),
            };
            form.form_error = Some(match refused {
                PasswordRefused::TooManyFromAddress => t.too_many_from_address,
                PasswordRefused::TooManyForAccount => t.too_many_for_account,
                _ => t.wrong_password,
            });
            return Ok(sign_in_page(&v, &st.shell, status, form));
        }
    };
    // The browser's old session, if any, ends: never reuse an id across a
    // sign-in (session fixation).
    if let Some(old) = &v.signed_in {
        let _ = st.xmpp.web_session_end(&old.session.token_hash).await;
    }
    let (Some(token), Some(handle)) = (random_token(32), random_token(16)) else {
        return Err(PageError::unavailable(v.lang));
    };
    let now = now();
    let life = if remember {
        REMEMBER_SECS
    } else {
        SESSION_IDLE_SECS
    };
    let user_agent: String = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let session = WebSession {
        token_hash: token_hash(&token),
        handle,
        username: account.username.clone(),
        remember,
        user_agent,
        address: kith_server::addr_key(ip).to_string(),
        created_at: now,
        last_seen: now,
        expires_at: now + life,
    };
    st.xmpp.web_session_create(&session).await.map_err(|e| {
        tracing::error!(error = %e, "storing a web session failed");
        PageError::unavailable(v.lang)
    })?;
    tracing::info!(account = %account.jid, remember, "signed in on the web");
    st.shell
        .live
        .publish(&account.username, LiveEvent::SessionsChanged);
    let mut r = see_other("/");
    set_cookie(
        &mut r,
        &session_cookie(&token, remember.then_some(REMEMBER_SECS)),
    );
    Ok(r)
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

/// Parse a form (bounded) and check its CSRF token: what every form post
/// does first.
async fn checked_form<T: serde::de::DeserializeOwned + HasCsrf>(
    st: &AppState,
    req: Request,
) -> Result<(Visitor, T, axum::http::request::Parts), PageError> {
    let (parts, body) = req.into_parts();
    let v = Visitor::load(&st.xmpp, &parts.headers).await?;
    let f: T = read_form(v.lang, &parts.headers, body).await?;
    v.check_csrf(
        &st.shell,
        &parts.headers,
        &authority(&parts.headers, &parts.uri),
        f.csrf(),
    )?;
    Ok((v, f, parts))
}

/// Parse a form, check its CSRF token, and require a signed-in browser.
async fn signed_in_form<T: serde::de::DeserializeOwned + HasCsrf>(
    st: &AppState,
    req: Request,
) -> Result<(Visitor, SignedIn, T, axum::http::request::Parts), PageError> {
    let (v, f, parts) = checked_form(st, req).await?;
    let Some(s) = v.signed_in.clone() else {
        return Err(PageError::new(
            v.lang,
            StatusCode::UNAUTHORIZED,
            Problem::SignInFirst,
        ));
    };
    Ok((v, s, f, parts))
}

/// A form carrying a CSRF token.
trait HasCsrf {
    fn csrf(&self) -> Option<&str>;
}

/// Every form of these pages has the token in its `csrf` field.
macro_rules! has_csrf {
    ($($form:ty),* $(,)?) => {
        $(impl HasCsrf for $form {
            fn csrf(&self) -> Option<&str> {
                self.csrf.as_deref()
            }
        })*
    };
}

has_csrf!(
    SignInFields,
    LanguageFields,
    CsrfOnly,
    HandleForm,
    PasswordFields
);

/// A response that signs this browser out (clears its cookie) and goes to
/// the start page with `done`.
fn signed_out(done: &str) -> Response {
    let mut r = see_other(&format!("/?done={done}"));
    set_cookie(&mut r, &clear_cookie(SESSION_COOKIE));
    r
}

fn storage_error(lang: Lang) -> impl Fn(kith_server::AccountError) -> PageError {
    move |e| {
        tracing::error!(error = %e, "web session storage failed");
        PageError::unavailable(lang)
    }
}

/// `POST /sign-out`: end this browser's session.
async fn sign_out(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let (v, s, _f, _) = signed_in_form::<CsrfOnly>(&st, req).await?;
    st.xmpp
        .web_session_end(&s.session.token_hash)
        .await
        .map_err(storage_error(v.lang))?;
    st.shell
        .live
        .publish(&s.session.username, LiveEvent::SessionsChanged);
    Ok(signed_out("signed-out"))
}

/// One row of the browsers list.
pub struct BrowserRow {
    pub handle: String,
    pub title: String,
    pub current: bool,
    pub badges: Vec<&'static str>,
    pub details: Vec<String>,
}

#[derive(Template)]
#[template(path = "browsers_list.html")]
pub struct BrowsersList {
    pub p_t: &'static Text,
    pub csrf: String,
    pub rows: Vec<BrowserRow>,
    /// Rendered for the live stream: replaces the list on the page by id.
    pub oob: bool,
}

#[derive(Template)]
#[template(path = "browsers.html")]
struct BrowsersPage {
    p: Ctx,
    notice: Option<&'static str>,
    list: String,
}

fn when(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn rows(t: &'static Text, sessions: Vec<WebSession>, current: &[u8]) -> Vec<BrowserRow> {
    let mut rows: Vec<BrowserRow> = sessions
        .into_iter()
        .map(|s| BrowserRow {
            current: s.token_hash == current,
            title: super::browser::describe(&s.user_agent)
                .unwrap_or_else(|| t.unknown_browser.to_string()),
            badges: [
                (s.token_hash == current).then_some(t.this_browser),
                Some(if s.remember {
                    t.remembered
                } else {
                    t.until_closed
                }),
            ]
            .into_iter()
            .flatten()
            .collect(),
            details: vec![
                format!("{}: {}", t.signed_in_at, when(s.created_at)),
                format!("{}: {}", t.last_seen, when(s.last_seen)),
                format!("{}: {}", t.from_address, s.address),
            ],
            handle: s.handle,
        })
        .collect();
    // This browser first.
    rows.sort_by_key(|r| !r.current);
    rows
}

/// The list of `s`'s account's browsers, rendered for `lang`.
pub async fn render_list(
    xmpp: &WebHandle,
    shell: &Shell,
    lang: Lang,
    s: &SignedIn,
    oob: bool,
) -> Result<String, PageError> {
    let sessions = xmpp
        .web_sessions_of(&s.session.username, now())
        .await
        .map_err(storage_error(lang))?;
    let t = lang.text();
    let list = BrowsersList {
        p_t: t,
        csrf: shell.csrf_session(&s.session.token_hash),
        rows: rows(t, sessions, &s.session.token_hash),
        oob,
    };
    list.render().map_err(|e| {
        tracing::error!(error = %e, "rendering the browsers list failed");
        PageError::unavailable(lang)
    })
}

fn need_sign_in(v: &Visitor) -> Response {
    v.finish(see_other("/"))
}

/// `GET /browsers`: the account's signed-in browsers.
async fn browsers(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let v = Visitor::load(&st.xmpp, req.headers()).await?;
    let Some(s) = &v.signed_in else {
        return Ok(need_sign_in(&v));
    };
    let list = render_list(&st.xmpp, &st.shell, v.lang, s, false).await?;
    Ok(v.finish(html(
        StatusCode::OK,
        &BrowsersPage {
            p: Ctx::new(&v, &st.shell, "/browsers"),
            notice: notice(v.t(), req.uri().query()),
            list,
        },
    )))
}

#[derive(Deserialize)]
struct HandleForm {
    csrf: Option<String>,
    handle: String,
}

/// `POST /browsers/sign-out`: sign out one of the account's browsers.
async fn sign_out_browser(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let (v, s, f, _) = signed_in_form::<HandleForm>(&st, req).await?;
    let user = &s.session.username;
    if f.handle.len() > 64 {
        return Err(PageError::new(
            v.lang,
            StatusCode::BAD_REQUEST,
            Problem::BadForm,
        ));
    }
    let found = st
        .xmpp
        .web_session_end_handle(user, &f.handle)
        .await
        .map_err(storage_error(v.lang))?;
    st.shell.live.publish(user, LiveEvent::SessionsChanged);
    if f.handle == s.session.handle {
        return Ok(signed_out("signed-out"));
    }
    Ok(see_other(if found {
        "/browsers?done=browser-signed-out"
    } else {
        "/browsers"
    }))
}

/// `POST /browsers/sign-out-everywhere`: sign out every browser of the
/// account, this one too.
async fn sign_out_everywhere(
    State(st): State<AppState>,
    req: Request,
) -> Result<Response, PageError> {
    let (v, s, _f, _) = signed_in_form::<CsrfOnly>(&st, req).await?;
    let n = st
        .xmpp
        .web_sessions_end_all(&s.session.username)
        .await
        .map_err(storage_error(v.lang))?;
    tracing::info!(account = %s.jid, browsers = n, "signed out everywhere");
    st.shell
        .live
        .publish(&s.session.username, LiveEvent::SessionsChanged);
    Ok(signed_out("signed-out-everywhere"))
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    p: Ctx,
    current_error: Option<&'static str>,
    new_error: Option<&'static str>,
    repeat_error: Option<&'static str>,
}

/// `GET /password`: the password form.
async fn password_page(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let v = Visitor::load(&st.xmpp, req.headers()).await?;
    if v.signed_in.is_none() {
        return Ok(need_sign_in(&v));
    }
    Ok(v.finish(html(
        StatusCode::OK,
        &PasswordPage {
            p: Ctx::new(&v, &st.shell, "/password"),
            current_error: None,
            new_error: None,
            repeat_error: None,
        },
    )))
}

#[derive(Deserialize)]
struct PasswordFields {
    csrf: Option<String>,
    current: String,
    new: String,
    repeat: String,
}

/// `POST /password`: check the current password (limited like a login),
/// store the new one, sign out every other browser.
async fn change_password(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let (v, s, f, parts) = signed_in_form::<PasswordFields>(&st, req).await?;
    let t = v.t();
    let again = |status, current_error, new_error, repeat_error| {
        v.finish(html(
            status,
            &PasswordPage {
                p: Ctx::new(&v, &st.shell, "/password"),
                current_error,
                new_error,
                repeat_error,
            },
        ))
    };
    if f.current.is_empty() {
        return Ok(again(
            StatusCode::BAD_REQUEST,
            Some(t.password_required),
            None,
            None,
        ));
    }
    if f.new.is_empty() || f.new.len() > kith_server::MAX_PASSWORD_BYTES {
        return Ok(again(
            StatusCode::BAD_REQUEST,
            None,
            Some(t.password_unacceptable),
            None,
        ));
    }
    if f.new != f.repeat {
        return Ok(again(
            StatusCode::BAD_REQUEST,
            None,
            None,
            Some(t.passwords_differ),
        ));
    }
    let ip = peer_ip(&parts.extensions);
    let r = st
        .xmpp
        .change_password(
            ip,
            &s.session.username,
            &f.current,
            &f.new,
            Some(&s.session.token_hash),
        )
        .await;
    match r {
        Ok(()) => {
            tracing::info!(account = %s.jid, "password changed on the web");
            st.shell
                .live
                .publish(&s.session.username, LiveEvent::SessionsChanged);
            Ok(see_other("/?done=password-changed"))
        }
        Err(PasswordChangeError::Current(PasswordRefused::Wrong)) => Ok(again(
            StatusCode::UNAUTHORIZED,
            Some(t.wrong_password),
            None,
            None,
        )),
        Err(PasswordChangeError::Current(PasswordRefused::TooManyFromAddress)) => Ok(again(
            StatusCode::TOO_MANY_REQUESTS,
            Some(t.too_many_from_address),
            None,
            None,
        )),
        Err(PasswordChangeError::Current(PasswordRefused::TooManyForAccount)) => Ok(again(
            StatusCode::TOO_MANY_REQUESTS,
            Some(t.too_many_for_account),
            None,
            None,
        )),
        Err(PasswordChangeError::Unacceptable) => Ok(again(
            StatusCode::BAD_REQUEST,
            None,
            Some(t.password_unacceptable),
            None,
        )),
        Err(_) => Err(PageError::unavailable(v.lang)),
    }
}

#[derive(Deserialize)]
struct LanguageFields {
    csrf: Option<String>,
    lang: String,
    next: Option<String>,
}

/// `POST /language`: remember the language picked, go back to the page.
async fn language(State(st): State<AppState>, req: Request) -> Result<Response, PageError> {
    let (v, f, _) = checked_form::<LanguageFields>(&st, req).await?;
    let Some(lang) = Lang::from_tag(&f.lang) else {
        return Err(PageError::new(
            v.lang,
            StatusCode::BAD_REQUEST,
            Problem::BadForm,
        ));
    };
    // Only the shell's own pages, never a URL from the form.
    let next = match f.next.as_deref() {
        Some("/browsers") => "/browsers",
        Some("/password") => "/password",
        _ => "/",
    };
    let mut r = see_other(next);
    set_cookie(&mut r, &lang_cookie(lang));
    Ok(v.finish(r))
}

/// `GET /events`: the live-update stream of a signed-in browser
/// (`text/event-stream`). When the account's browsers change, it sends the
/// new list (HTML that htmx swaps in by id); when this browser is signed
/// out, a `signed-out` event, and ends.
async fn events(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let v = Visitor::load(&st.xmpp, &headers).await?;
    let Some(s) = v.signed_in.clone() else {
        return Err(PageError::new(
            v.lang,
            StatusCode::UNAUTHORIZED,
            Problem::SignInFirst,
        ));
    };
    let Some(sub) = st.shell.live.subscribe(&s.session.username) else {
        return Ok((StatusCode::TOO_MANY_REQUESTS, "too many event streams").into_response());
    };
    let state = EventState {
        xmpp: st.xmpp.clone(),
        shell: st.shell.clone(),
        lang: v.lang,
        s,
        sub,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, next_event);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(25)))
        .into_response())
}

struct EventState {
    xmpp: WebHandle,
    shell: Arc<Shell>,
    lang: Lang,
    s: SignedIn,
    sub: crate::live::Subscription,
    done: bool,
}

async fn next_event(
    mut st: EventState,
) -> Option<(Result<Event, std::convert::Infallible>, EventState)> {
    if st.done {
        return None;
    }
    let mut shutdown = st.shell.shutdown.clone();
    loop {
        tokio::select! {
            ev = st.sub.recv() => {
                ev?;
            }
            _ = shutdown.changed() => return None,
        }
        let still = st
            .xmpp
            .web_session(&st.s.session.token_hash, now())
            .await
            .ok()?;
        if still.is_none() {
            st.done = true;
            return Some((Ok(Event::default().event("signed-out").data("")), st));
        }
        match render_list(&st.xmpp, &st.shell, st.lang, &st.s, true).await {
            Ok(html) => return Some((Ok(Event::default().data(html)), st)),
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_come_from_a_fixed_list() {
        let t = Lang::En.text();
        assert_eq!(
            notice(t, Some("done=signed-out")),
            Some(t.notice_signed_out)
        );
        assert_eq!(
            notice(t, Some("x=1&done=password-changed")),
            Some(t.notice_password_changed)
        );
        assert_eq!(notice(t, Some("done=<script>")), None);
        assert_eq!(notice(t, None), None);
    }
}
