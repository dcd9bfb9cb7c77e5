//! SASL2 (XEP-0388): authentication in one `<authenticate/>` that may also
//! bind a resource (Bind2, XEP-0386, `bind2.rs`), ask for a FAST token or log
//! in with one (XEP-0484, `xep/fast.rs`), with no stream restart afterwards.
//!
//! The password mechanisms are exactly SASL1's and run through the same
//! exchange (`c2s::exchange`): same SCRAM code, same rate limits, the same
//! failed-attempt count per connection, the same cost for unknown accounts.
//! Only the namespace of `<challenge/>`/`<response/>` differs.
//!
//! `<success/>` carries `<additional-data/>` (SCRAM's server signature or the
//! HT server proof), `<authorization-identifier/>` (the full JID when Bind2
//! bound one, else the bare JID), Bind2's `<bound/>` and FAST's `<token/>`; it
//! is followed by the stream features of the authenticated stream.
//!
//! XEP-0198 inline: `<sm xmlns='urn:xmpp:sm:3'/>` is listed in [`feature`]'s
//! `<inline/>`. A `<resume/>` child of `<authenticate/>` is tried once the
//! client is authenticated, through the same claim as a classic `<resume/>`
//! (`sm::table::claim`): `<success/>` then carries `<resumed/>` and the
//! session continues on this connection (Bind2 is not done); or it carries
//! the `<failed/>` and the client binds, with Bind2 in the same request or
//! classic binding afterwards. `<enable/>` inside `<bind/>` starts the new
//! session with stream management on: `<bound/>` carries `<enabled/>`.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use jid::BareJid;
use minidom::Element;

use super::bind2;
use super::c2s::{decode, exchange, features_bytes, post_auth_features, Bound, Stop};
use super::{StreamError, Transport, XmlStream};
use crate::core::Core;
use crate::sasl::{ht, Failure, Mechanism};
use crate::sm::Resumed;
use crate::tls::ChannelBindings;
use crate::xep::fast;
use crate::xml::{el, ns};

/// The SASL2 namespace.
pub const NS: &str = "urn:xmpp:sasl:2";
/// Longest user-agent id accepted (a UUID is 36).
const MAX_AGENT_ID: usize = 128;
/// Longest software / device name kept, in characters.
const MAX_AGENT_TEXT: usize = 64;

/// The `<authentication/>` stream feature: SASL1's mechanisms, with Bind2 and
/// FAST inline.
pub fn feature(core: &Core, bindings: &ChannelBindings) -> Element {
    let plus = bindings.exporter.is_some() || bindings.server_end_point.is_some();
    let mechs = Mechanism::ALL
        .into_iter()
        .filter(|m| plus || !m.is_plus())
        .map(|m| el("mechanism", NS).text(m.name()).build());
    el("authentication", NS)
        .children(mechs)
        .child(
            el("inline", NS)
                .child(bind2::feature(core))
                .child(fast::feature(bindings))
                .child(Element::bare("sm", crate::sm::NS))
                .build(),
        )
        .build()
}

/// How a successful SASL2 authentication continues.
pub enum Outcome {
    /// Bind2 bound a resource: the session starts with `reply`.
    Bound(Bound),
    /// No Bind2: `<success/>` and the features were sent; the client binds
    /// with RFC 6120 resource binding next, on the same stream.
    Authenticated(BareJid),
    /// XEP-0198 `<resume/>` took over a hibernated session; the `<success/>`
    /// (with `<resumed/>`) and features are to be written first.
    Resumed(Resumed, Vec<u8>),
}

/// The SASL2 `<user-agent/>`.
pub(crate) struct UserAgent {
    pub(crate) id: Option<String>,
    pub(crate) software: String,
    pub(crate) device: String,
}

impl UserAgent {
    fn fast(&self) -> Option<fast::Agent<'_>> {
        Some(fast::Agent {
            id: self.id.as_deref()?,
            software: &self.software,
            device: &self.device,
        })
    }
}

pub(crate) type Refusal = (Failure, &'static str);

pub(crate) fn user_agent(auth: &Element) -> Result<Option<UserAgent>, Refusal> {
    let Some(ua) = auth.get_child("user-agent", NS) else {
        return Ok(None);
    };
    let id = match ua.attr("id") {
        None => None,
        Some(id) if !id.is_empty() && id.len() <= MAX_AGENT_ID => Some(id.to_string()),
        Some(_) => return Err((Failure::MalformedRequest, "bad user-agent id")),
    };
    let text = |name: &str| -> String {
        ua.get_child(name, NS)
            .map(|e| e.text().trim().chars().take(MAX_AGENT_TEXT).collect())
            .unwrap_or_default()
    };
    Ok(Some(UserAgent {
        id,
        software: text("software"),
        device: text("device"),
    }))
}

/// `<initial-response/>`: absent = none; present but empty = empty data.
pub(crate) fn initial_response(auth: &Element) -> Result<Option<Vec<u8>>, Refusal> {
    match auth.get_child("initial-response", NS) {
        None => Ok(None),
        Some(e) => match decode(&e.text()) {
            Ok(None) => Ok(Some(Vec::new())),
            other => other,
        },
    }
}

/// The FAST token request, checked before authenticating.
pub(crate) fn token_request<'a>(
    auth: &'a Element,
    agent: Option<&UserAgent>,
    bindings: &ChannelBindings,
) -> Result<Option<&'a str>, Refusal> {
    let Some(req) = auth.get_child("request-token", fast::NS) else {
        return Ok(None);
    };
    let mech = req.attr("mechanism").unwrap_or("");
    if !ht::offered(bindings).contains(&mech) {
        return Err((
            Failure::InvalidMechanism,
            "that FAST mechanism is not offered here",
        ));
    }
    if agent.and_then(|a| a.id.as_ref()).is_none() {
        return Err((
            Failure::MalformedRequest,
            "a FAST token needs a <user-agent id='…'/>",
        ));
    }
    Ok(Some(mech))
}

fn internal(e: impl std::fmt::Display) -> Stop {
    tracing::error!(error = %e, "SASL2 storage failure");
    Stop::Error(StreamError::new("internal-server-error"))
}

async fn refuse<T: Transport>(
    stream: &mut XmlStream<T>,
    peer: SocketAddr,
    (failure, why): Refusal,
) -> Result<Result<Outcome, ()>, Stop> {
    tracing::info!(%peer, condition = failure.condition(), why, "SASL2 authentication failed");
    stream
        .send(
            &el("failure", NS)
                .child(Element::bare(failure.condition(), ns::SASL))
                .child(el("text", NS).text(why).build())
                .build(),
        )
        .await?;
    Ok(Err(()))
}

/// Handle one `<authenticate/>`: `Ok(Err(()))` when it failed (the
/// `<failure/>` was sent and the client may try again).
pub(super) async fn authenticate<T: Transport>(
    core: &Arc<Core>,
    stream: &mut XmlStream<T>,
    peer: SocketAddr,
    bindings: &ChannelBindings,
    auth: &Element,
) -> Result<Result<Outcome, ()>, Stop> {
    let mech = auth.attr("mechanism").unwrap_or("");
    let agent = match user_agent(auth) {
        Ok(a) => a,
        Err(r) => return refuse(stream, peer, r).await,
    };
    let request = match token_request(auth, agent.as_ref(), bindings) {
        Ok(r) => r,
        Err(r) => return refuse(stream, peer, r).await,
    };
    let fast_agent = agent.as_ref().and_then(UserAgent::fast);
    let initial = initial_response(auth);

    let (username, additional, rotate) = if ht::is_ht(mech) {
        let initial = match initial {
            Ok(i) => i,
            Err(r) => return refuse(stream, peer, r).await,
        };
        let login = fast::login(
            core,
            peer.ip(),
            bindings,
            mech,
            initial,
            fast_agent.as_ref(),
            auth.get_child("fast", fast::NS),
        )
        .await
        .map_err(internal)?;
        match login {
            Ok(l) => (
                l.username,
                Some(l.additional),
                l.rotate.then_some(l.mechanism),
            ),
            Err(r) => return refuse(stream, peer, r).await,
        }
    } else {
        match exchange(core, stream, peer, bindings, NS, Some(mech), initial).await? {
            Ok((u, d)) => (u, d, None),
            Err(r) => return refuse(stream, peer, r).await,
        }
    };
    tracing::info!(%peer, user = %username, mechanism = mech, "authenticated (SASL2)");
    let bare = BareJid::new(&format!("{username}@{}", core.domain)).map_err(internal)?;

    let token = match (request.map(str::to_string).or(rotate), &fast_agent) {
        (Some(m), Some(a)) => Some(
            fast::issue(core, &username, a, &m)
                .await
                .map_err(internal)?,
        ),
        _ => None,
    };
    let mut success = el("success", NS);
    if let Some(data) = additional {
        success = success.child(el("additional-data", NS).text(B64.encode(data)).build());
    }

    // XEP-0198 resumption inside <authenticate/>: resumed, no binding.
    let mut resume_failed = None;
    if let Some(req) = auth.get_child("resume", crate::sm::NS) {
        match crate::sm::table::claim(core, &bare, req).await {
            Ok(r) => {
                let success = success
                    .child(
                        el("authorization-identifier", NS)
                            .text(r.session.jid.to_string())
                            .build(),
                    )
                    .child(r.sm.resumed(&r.previd))
                    .children(token);
                let mut reply = Vec::new();
                crate::xml::serialize(&success.build(), &mut reply);
                reply.extend(features_bytes(&post_auth_features(core, true)));
                return Ok(Ok(Outcome::Resumed(r, reply)));
            }
            Err(failed) => {
                tracing::debug!(%peer, "SASL2 inline resumption failed");
                resume_failed = Some(failed);
            }
        }
    }

    let bound = match auth.get_child("bind", bind2::NS) {
        Some(req) => {
            let mut b = bind2::bind(core, &bare, req, fast_agent.as_ref().map(|a| a.id))
                .ok_or_else(|| internal("no valid resource"))?;
            // XEP-0198 enabled inline: <enabled/> in <bound/>.
            if let Some(enable) = req.get_child("enable", crate::sm::NS) {
                let (sm, enabled) = crate::sm::Sm::enable_inline(core, enable);
                b.bound.append_child(enabled);
                b.sm = sm;
            }
            Some(b)
        }
        None => None,
    };
    let authzid = match &bound {
        Some(b) => b.jid.to_string(),
        None => bare.to_string(),
    };
    success = success.child(el("authorization-identifier", NS).text(authzid).build());
    if let Some(failed) = resume_failed {
        success = success.child(failed);
    }
    let (bound, effects, sm) = match bound {
        Some(b) => (
            Some(b.jid),
            {
                success = success.child(b.bound);
                b.effects
            },
            b.sm,
        ),
        None => (None, Vec::new(), crate::sm::Sm::default()),
    };
    if let Some(t) = token {
        success = success.child(t);
    }
    let mut reply = Vec::new();
    crate::xml::serialize(&success.build(), &mut reply);
    reply.extend(features_bytes(&post_auth_features(core, bound.is_some())));
    match bound {
        Some(jid) => Ok(Ok(Outcome::Bound(Bound {
            jid,
            reply,
            effects,
            sm,
        }))),
        None => {
            stream.write(&reply).await?;
            Ok(Ok(Outcome::Authenticated(bare)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn user_agent_is_bounded() {
        let a = parse(&format!(
            "<authenticate xmlns='{NS}'><user-agent id='u1'><software>{}</software><device>Phone</device></user-agent></authenticate>",
            "s".repeat(200)
        ));
        let ua = user_agent(&a).expect("ok").expect("present");
        assert_eq!(ua.id.as_deref(), Some("u1"));
        assert_eq!(ua.software.len(), MAX_AGENT_TEXT);
        assert_eq!(ua.device, "Phone");
        let long = parse(&format!(
            "<authenticate xmlns='{NS}'><user-agent id='{}'/></authenticate>",
            "x".repeat(MAX_AGENT_ID + 1)
        ));
        assert!(user_agent(&long).is_err());
    }

    #[test]
    fn initial_response_absent_empty_or_data() {
        let none = parse(&format!("<authenticate xmlns='{NS}'/>"));
        assert_eq!(initial_response(&none), Ok(None));
        let empty = parse(&format!(
            "<authenticate xmlns='{NS}'><initial-response/></authenticate>"
        ));
        assert_eq!(initial_response(&empty), Ok(Some(vec![])));
        let data = parse(&format!(
            "<authenticate xmlns='{NS}'><initial-response>aGk=</initial-response></authenticate>"
        ));
        assert_eq!(initial_response(&data), Ok(Some(b"hi".to_vec())));
    }

    #[test]
    fn token_requests_need_an_offered_mechanism_and_a_user_agent_id() {
        let none = ChannelBindings::default();
        let req = |m: &str| {
            parse(&format!(
                "<authenticate xmlns='{NS}'><request-token xmlns='{}' mechanism='{m}'/></authenticate>",
                fast::NS
            ))
        };
        let ua = UserAgent {
            id: Some("u".into()),
            software: String::new(),
            device: String::new(),
        };
        assert_eq!(
            token_request(&req("HT-SHA-256-NONE"), Some(&ua), &none),
            Ok(Some("HT-SHA-256-NONE"))
        );
        assert_eq!(
            token_request(&req("HT-SHA-256-EXPR"), Some(&ua), &none).map_err(|e| e.0),
            Err(Failure::InvalidMechanism)
        );
        assert_eq!(
            token_request(&req("HT-SHA-256-NONE"), None, &none).map_err(|e| e.0),
            Err(Failure::MalformedRequest)
        );
    }
}
