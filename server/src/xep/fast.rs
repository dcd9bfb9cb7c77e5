//! FAST (XEP-0484): after one password login, a client gets a token and
//! reconnects with it in a single round trip, without the password.
//!
//! Tokens are bound to (account, SASL2 user-agent id) and to the HT mechanism
//! they were requested for ([`crate::sasl::ht`]); only their SHA-256 is stored
//! (`storage/fast.rs`). A token lives `auth.fast_token_days` (21 days); a login
//! with a token older than [`ROTATE_AFTER_SECS`] (1 day) gets a new one, and the
//! old one stays valid until the new one is used. An optional `count` on
//! `<fast/>` must grow with every use (replay protection). `invalidate` ends a
//! token; a password change (or `kith user revoke-tokens`) ends them all. At
//! most [`MAX_CLIENTS`] clients per account hold tokens (the oldest is dropped).

use std::net::IpAddr;

use minidom::Element;

use crate::core::Core;
use crate::limits::Proof;
use crate::registry::{Module, Registry};
use crate::sasl::{ht, Failure};
use crate::storage::fast::{NewToken, Slot};
use crate::storage::{now, StorageError};
use crate::tls::ChannelBindings;
use crate::xml::el;

pub const MODULE: Module = Module {
    name: "fast",
    register,
};

/// The FAST namespace.
pub const NS: &str = "urn:xmpp:fast:0";
/// A token older than this (or than half its lifetime, if shorter) is
/// replaced at its next use.
pub const ROTATE_AFTER_SECS: i64 = 24 * 3600;
/// Clients per account that may hold tokens.
pub const MAX_CLIENTS: u32 = 32;

fn register(r: &mut Registry) {
    r.migrations(&crate::storage::fast::MIGRATOR);
}

/// The `<fast/>` SASL2 inline feature: the HT mechanisms usable here.
pub fn feature(bindings: &ChannelBindings) -> Element {
    el("fast", NS)
        .children(
            ht::offered(bindings)
                .into_iter()
                .map(|m| el("mechanism", NS).text(m).build()),
        )
        .build()
}

/// The client a token belongs to (SASL2 `<user-agent/>`).
pub struct Agent<'a> {
    pub id: &'a str,
    pub software: &'a str,
    pub device: &'a str,
}

/// A successful token login.
pub struct Login {
    pub username: String,
    /// The server's HT proof, for `<additional-data/>`.
    pub additional: Vec<u8>,
    /// The token is due for replacement.
    pub rotate: bool,
    /// The mechanism the token is bound to (a rotated token keeps it).
    pub mechanism: String,
}

type Outcome = Result<Login, (Failure, &'static str)>;

/// Log in with a token: `initial` is the HT initial response, `fast` the
/// client's `<fast/>` element (count, invalidate).
pub async fn login(
    core: &Core,
    ip: IpAddr,
    bindings: &ChannelBindings,
    mech: &str,
    initial: Option<Vec<u8>>,
    agent: Option<&Agent<'_>>,
    fast: Option<&Element>,
) -> Result<Outcome, StorageError> {
    let Some(cb) = ht::binding_data(mech, bindings) else {
        return Ok(Err((
            Failure::InvalidMechanism,
            "this FAST mechanism is not offered on this connection",
        )));
    };
    let Some(initial) = initial else {
        return Ok(Err((
            Failure::MalformedRequest,
            "HT mechanisms need an initial response",
        )));
    };
    let (authcid, proof) = match ht::parse_initial(&initial) {
        Ok(p) => p,
        Err(f) => return Ok(Err((f, "malformed HT message"))),
    };
    // The authcid is the username; a bare JID of this domain is accepted too.
    let user = match authcid.split_once('@') {
        Some((u, d)) if d.eq_ignore_ascii_case(&core.domain) => u.to_string(),
        Some(_) => return Ok(Err((Failure::NotAuthorized, "not an account here"))),
        None => authcid,
    };
    let Some(username) = crate::stream::c2s::normalize_user(&user, &core.domain) else {
        return Ok(Err((Failure::NotAuthorized, "invalid username")));
    };
    // A token cannot be guessed: only the per-address count applies, so a
    // password-guessing attack on the account never keeps its devices out.
    let attempt = match core.auth_limiter.begin(ip, &username, Proof::Token).await {
        Ok(a) => a,
        Err(t) => return Ok(Err(crate::stream::c2s::throttled(t))),
    };
    let count = match fast.and_then(|f| f.attr("count")) {
        None => None,
        Some(c) => match c.parse::<u32>() {
            Ok(n) => Some(i64::from(n)),
            Err(_) => return Ok(Err((Failure::MalformedRequest, "count is not a number"))),
        },
    };
    let Some(agent) = agent else {
        return Ok(Err((
            Failure::NotAuthorized,
            "a token login needs the <user-agent id/> the token was issued to",
        )));
    };
    let tokens = core.db.fast_tokens(&username, agent.id).await?;
    // Check every slot (no early exit), so timing does not tell which matched.
    let mut matched = None;
    for t in &tokens {
        if ht::initiator_ok(&t.hash, &cb, &proof) && matched.is_none() {
            matched = Some(t);
        }
    }
    // A failure keeps the attempt counted (it is dropped with the closure's caller).
    let fail = |f: Failure, why: &'static str| Ok(Err((f, why)));
    let Some(token) = matched else {
        return fail(Failure::NotAuthorized, "unknown, revoked or wrong token");
    };
    if token.mechanism != mech {
        return fail(
            Failure::NotAuthorized,
            "the token was issued for another mechanism",
        );
    }
    let now = now();
    if token.expires_at <= now {
        core.db.fast_forget(&username, agent.id, token.slot).await?;
        return fail(Failure::CredentialsExpired, "the token expired");
    }
    if !core
        .db
        .fast_use(&username, agent.id, token.slot, count, now)
        .await?
    {
        return fail(
            Failure::NotAuthorized,
            "this count was already used with this token (replay)",
        );
    }
    let invalidate = matches!(fast.and_then(|f| f.attr("invalidate")), Some("1" | "true"));
    if invalidate {
        core.db.fast_invalidate(&username, agent.id).await?;
    }
    attempt.succeeded();
    let rotate_after = ROTATE_AFTER_SECS.min(lifetime(core) / 2);
    let rotate =
        !invalidate && token.slot == Slot::Current && now - token.issued_at >= rotate_after;
    Ok(Ok(Login {
        username,
        additional: ht::responder(&token.hash, &cb),
        rotate,
        mechanism: token.mechanism.clone(),
    }))
}

/// Issue a token for `mech` to a client; returns the `<token/>` for `<success/>`.
pub async fn issue(
    core: &Core,
    username: &str,
    agent: &Agent<'_>,
    mech: &str,
) -> Result<Element, StorageError> {
    let token = ht::new_token();
    let issued_at = now();
    let expires_at = issued_at + lifetime(core);
    core.db
        .fast_issue(
            &NewToken {
                username,
                agent_id: agent.id,
                software: agent.software,
                device: agent.device,
                hash: &ht::token_hash(&token),
                mechanism: mech,
                issued_at,
                expires_at,
            },
            MAX_CLIENTS,
        )
        .await?;
    Ok(el("token", NS)
        .attr("expiry", datetime(expires_at))
        .attr("token", token)
        .build())
}

/// The configured token lifetime in seconds.
fn lifetime(core: &Core) -> i64 {
    i64::try_from(core.config.fast_token_lifetime.as_secs()).unwrap_or(i64::MAX / 2)
}

/// Seconds since the epoch as an XEP-0082 DateTime.
pub fn datetime(secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry_is_an_xep0082_datetime() {
        assert_eq!(super::datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::datetime(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}
