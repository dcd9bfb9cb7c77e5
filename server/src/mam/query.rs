//! Archive queries (XEP-0313 §4 with XEP-0059 Result Set Management): the
//! form of supported fields, parsing a query, running it page by page, the
//! `<result/>` messages and the closing `<fin/>`, and the `#extended` metadata.
//! The same code answers for an account's own archive and for a group chat
//! room's archive (`muc/mam.rs`): a [`Source`] says whose archive it is and
//! whom the results come from.
//!
//! Bounds: a page holds at most [`MAX_PAGE`] messages (a larger `max` is
//! capped, no `max` means [`DEFAULT_PAGE`]); an `ids` query names at most
//! [`MAX_PAGE`] ids; a page also stops before [`MAX_PAGE_BYTES`] of archived
//! stanzas (then it is not `complete`), so it always fits the session's outbound
//! queue. The RSM `<count/>` is given when at most [`MAX_COUNT`]
//! messages match (XEP-0059 makes it optional; counting more costs more than
//! the page).

use jid::Jid;
use minidom::Element;

use crate::deliver::username;
use crate::registry::{BoxFuture, IqCtx, IqResult};
use crate::stanza::StanzaError;
use crate::storage::archive::{ArchiveFilter, Archived};
use crate::xml::{el, ns};

use super::rules::{format_stamp, parse_id, parse_stamp, public_id};
use super::NS;

const NS_DATA: &str = "jabber:x:data";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";

/// Most messages in one page.
pub const MAX_PAGE: usize = 250;
/// Most bytes of archived stanzas sent for one query (a session's outbound
/// queue holds 2 MiB; a page of 250 large messages would not fit).
pub const MAX_PAGE_BYTES: usize = 512 * 1024;
/// Largest result set whose size is counted.
pub const MAX_COUNT: usize = 5000;
/// Messages in a page when the client gives no `max`.
pub const DEFAULT_PAGE: usize = 50;

/// A parsed query.
#[derive(Debug, Default, PartialEq)]
struct Query {
    queryid: Option<String>,
    with: Option<Jid>,
    start: Option<i64>,
    end: Option<i64>,
    after_id: Option<i64>,
    before_id: Option<i64>,
    ids: Vec<i64>,
    max: usize,
    /// RSM `<after/>`.
    after: Option<i64>,
    /// RSM `<before/>`: `Some(None)` is the empty `<before/>` (the last page).
    before: Option<Option<i64>>,
    flip: bool,
}

fn bad(text: impl Into<String>) -> StanzaError {
    StanzaError::bad_request().with_text(text)
}

fn unknown_id(id: &str) -> StanzaError {
    StanzaError::item_not_found().with_text(format!("no message with id '{id}' in the archive"))
}

fn field_values(f: &Element) -> Vec<String> {
    f.children()
        .filter(|c| c.is("value", NS_DATA))
        .map(|v| v.text().trim().to_string())
        .collect()
}

fn single(var: &str, f: &Element) -> Result<Option<String>, StanzaError> {
    let mut v = field_values(f);
    match v.len() {
        0 => Ok(None),
        1 => Ok(v.pop().filter(|s| !s.is_empty())),
        _ => Err(bad(format!("field '{var}' takes one value"))),
    }
}

/// Parse an archive id named by the client; unknown format is an unknown id.
fn id_of(s: &str) -> Result<i64, StanzaError> {
    parse_id(s).ok_or_else(|| unknown_id(s))
}

fn parse(q: &Element) -> Result<Query, StanzaError> {
    let mut out = Query {
        queryid: q.attr("queryid").map(str::to_string),
        max: DEFAULT_PAGE,
        flip: q.has_child("flip-page", NS),
        ..Query::default()
    };
    if let Some(x) = q.get_child("x", NS_DATA) {
        if !matches!(x.attr("type"), None | Some("submit")) {
            return Err(bad("the query form must be of type submit"));
        }
        for f in x.children().filter(|c| c.is("field", NS_DATA)) {
            let var = f.attr("var").unwrap_or("");
            match var {
                "FORM_TYPE" => {
                    if single(var, f)?.as_deref() != Some(NS) {
                        return Err(bad(format!("FORM_TYPE must be {NS}")));
                    }
                }
                "with" => {
                    if let Some(v) = single(var, f)? {
                        out.with = Some(
                            Jid::new(&v).map_err(|_| bad(format!("'with' is not a JID: '{v}'")))?,
                        );
                    }
                }
                "start" | "end" => {
                    if let Some(v) = single(var, f)? {
                        let t = parse_stamp(&v)
                            .ok_or_else(|| bad(format!("'{var}' is not a timestamp: '{v}'")))?;
                        if var == "start" {
                            out.start = Some(t);
                        } else {
                            out.end = Some(t);
                        }
                    }
                }
                "after-id" => out.after_id = single(var, f)?.map(|v| id_of(&v)).transpose()?,
                "before-id" => out.before_id = single(var, f)?.map(|v| id_of(&v)).transpose()?,
                "ids" => {
                    for v in field_values(f).iter().filter(|v| !v.is_empty()) {
                        out.ids.push(id_of(v)?);
                    }
                    if out.ids.len() > MAX_PAGE {
                        return Err(bad(format!("at most {MAX_PAGE} ids per query")));
                    }
                }
                other => return Err(bad(format!("unsupported field '{other}'"))),
            }
        }
    }
    if let Some(set) = q.get_child("set", NS_RSM) {
        if let Some(m) = set.get_child("max", NS_RSM) {
            let n: usize = m
                .text()
                .trim()
                .parse()
                .map_err(|_| bad("RSM max must be a non-negative number"))?;
            out.max = n.min(MAX_PAGE);
        }
        if let Some(a) = set.get_child("after", NS_RSM) {
            out.after = Some(id_of(a.text().trim())?);
        }
        if let Some(b) = set.get_child("before", NS_RSM) {
            let t = b.text();
            let t = t.trim();
            out.before = Some(if t.is_empty() { None } else { Some(id_of(t)?) });
        }
        if set.has_child("index", NS_RSM) {
            return Err(StanzaError::new("cancel", "feature-not-implemented")
                .with_text("RSM index is not supported; page with after/before"));
        }
    }
    if out.after.is_some() && out.before.is_some() {
        return Err(bad("RSM after and before cannot be combined"));
    }
    Ok(out)
}

/// `<iq type='get'><query xmlns='urn:xmpp:mam:2'/></iq>`: the supported fields.
pub fn form(_cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move { Ok(Some(form_payload())) })
}

/// The query form: the fields a query may use.
pub(crate) fn form_payload() -> Element {
    let field = |var: &str, ty: &str| el("field", NS_DATA).attr("var", var).attr("type", ty);
    let x = el("x", NS_DATA)
        .attr("type", "form")
        .child(
            field("FORM_TYPE", "hidden")
                .child(el("value", NS_DATA).text(NS).build())
                .build(),
        )
        .child(field("with", "jid-single").build())
        .child(field("start", "text-single").build())
        .child(field("end", "text-single").build())
        .child(field("after-id", "text-single").build())
        .child(field("before-id", "text-single").build())
        .child(field("ids", "text-multi").build())
        .build();
    el("query", NS).child(x).build()
}

/// `<iq type='get'><metadata xmlns='urn:xmpp:mam:2'/></iq>` (`#extended`):
/// the first and last message of the archive.
pub fn metadata(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let user = cx.session.jid.to_bare();
        metadata_of(&cx.core.db, username(&user)).await
    })
}

/// The `#extended` metadata of the archive kept under `user`.
pub(crate) async fn metadata_of(db: &crate::storage::Db, user: &str) -> IqResult {
    let bounds = db
        .archive_bounds(user)
        .await
        .map_err(|_| StanzaError::internal())?;
    let mut m = el("metadata", NS);
    if let Some(((fid, fstamp), (lid, lstamp))) = bounds {
        for (name, id, stamp) in [("start", fid, fstamp), ("end", lid, lstamp)] {
            m = m.child(
                el(name, NS)
                    .attr("id", public_id(id))
                    .attr("timestamp", format_stamp(stamp))
                    .build(),
            );
        }
    }
    Ok(Some(m.build()))
}

/// Whose archive a query reads, and to whom and how its results are sent.
pub(crate) struct Source<'a> {
    /// The archive's owner in storage: an account's username, or a room's
    /// bare JID.
    pub user: &'a str,
    /// The `from` of the result messages: the account's or the room's bare JID.
    pub from: &'a str,
    /// Applied to each archived message before it is sent (a room hides
    /// real JIDs from those who may not see them).
    pub shape: &'a (dyn Fn(&mut Element) + Sync),
    /// The full JID that asked (the `to` of the results).
    pub reader: &'a str,
    /// Sends one result message to the reader.
    pub send: &'a (dyn Fn(Element) + Sync),
}

/// `<iq type='set'><query xmlns='urn:xmpp:mam:2'>…</query></iq>`: send the
/// matching messages as `<result/>` messages, then answer with `<fin/>`.
pub fn run(cx: IqCtx<'_>) -> BoxFuture<'_, IqResult> {
    Box::pin(async move {
        let owner = cx.session.jid.to_bare();
        let session = cx.session;
        let src = Source {
            user: username(&owner),
            from: owner.as_str(),
            shape: &|_| {},
            reader: session.jid.as_str(),
            send: &|m| session.send(m),
        };
        answer(&cx.core.db, &src, cx.payload).await
    })
}

/// Run query `payload` over the archive of `src`, sending the results to
/// its reader; the `<fin/>` to answer with.
pub(crate) async fn answer(
    db: &crate::storage::Db,
    src: &Source<'_>,
    payload: &Element,
) -> IqResult {
    let q = parse(payload)?;
    let user = src.user.to_string();
    let internal = |e: crate::storage::StorageError| {
        tracing::error!(error = %e, "archive query failed");
        StanzaError::internal()
    };
    let (page, complete, count) = if !q.ids.is_empty() {
        let found = db.archive_by_ids(&user, &q.ids).await.map_err(internal)?;
        if let Some(missing) = q.ids.iter().find(|i| !found.iter().any(|a| a.id == **i)) {
            return Err(unknown_id(&public_id(*missing)));
        }
        let n = found.len() as i64;
        let (found, cut) = fit(found, false);
        (found, !cut, Some(n))
    } else {
        // Ids the client names must exist (XEP-0313 §4.1.3, XEP-0059 §2.5).
        for id in [q.after_id, q.before_id, q.after, q.before.flatten()]
            .into_iter()
            .flatten()
        {
            if !db.archive_has(&user, id).await.map_err(internal)? {
                return Err(unknown_id(&public_id(id)));
            }
        }
        let mut filter = ArchiveFilter {
            with_bare: q.with.as_ref().map(|w| w.to_bare().to_string()),
            with_resource: q
                .with
                .as_ref()
                .and_then(|w| w.resource().map(|r| r.as_str().to_string())),
            after: q.after_id,
            before: q.before_id,
        };
        let mut empty = false;
        if let Some(start) = q.start {
            match db
                .archive_id_at(&user, start, true)
                .await
                .map_err(internal)?
            {
                Some(id) => filter.after = filter.after.max(Some(id - 1)),
                None => empty = true,
            }
        }
        if let Some(end) = q.end {
            match db
                .archive_id_at(&user, end, false)
                .await
                .map_err(internal)?
            {
                Some(id) => filter.before = Some(filter.before.map_or(id + 1, |b| b.min(id + 1))),
                None => empty = true,
            }
        }
        if empty {
            (Vec::new(), true, Some(0))
        } else {
            let count = db
                .archive_count(&user, &filter, MAX_COUNT)
                .await
                .map_err(internal)?;
            let mut paged = filter.clone();
            let backward = q.before.is_some();
            if let Some(a) = q.after {
                paged.after = paged.after.max(Some(a));
            }
            if let Some(Some(b)) = q.before {
                paged.before = Some(paged.before.map_or(b, |x| x.min(b)));
            }
            let (page, more) = db
                .archive_page(&user, &paged, q.max, backward)
                .await
                .map_err(internal)?;
            let (page, cut) = fit(page, backward);
            (page, !more && !cut, count)
        }
    };
    let ordered: Vec<&Archived> = if q.flip {
        page.iter().rev().collect()
    } else {
        page.iter().collect()
    };
    for a in &ordered {
        match a.stanza.parse::<Element>() {
            Ok(mut inner) => {
                (src.shape)(&mut inner);
                (src.send)(result_message(src.from, src.reader, &q, a, inner))
            }
            Err(e) => {
                tracing::error!(error = %e, id = a.id, "an archived message does not parse")
            }
        }
    }
    let mut set = el("set", NS_RSM);
    if let (Some(first), Some(last)) = (ordered.first(), ordered.last()) {
        set = set
            .child(el("first", NS_RSM).text(public_id(first.id)).build())
            .child(el("last", NS_RSM).text(public_id(last.id)).build());
    }
    if let Some(n) = count {
        set = set.child(el("count", NS_RSM).text(n.to_string()).build());
    }
    let mut fin = el("fin", NS).attr_opt("queryid", q.queryid.clone());
    if complete {
        fin = fin.attr("complete", "true");
    }
    Ok(Some(fin.child(set.build()).build()))
}

/// Keep as much of a page (oldest first) as fits in [`MAX_PAGE_BYTES`], at
/// least one message: the oldest when paging forward, the newest when paging
/// backward. Returns the page and whether it was cut.
fn fit(mut page: Vec<Archived>, backward: bool) -> (Vec<Archived>, bool) {
    let mut total = 0;
    let mut keep = 0;
    let sizes: Vec<usize> = if backward {
        page.iter().rev().map(|a| a.stanza.len()).collect()
    } else {
        page.iter().map(|a| a.stanza.len()).collect()
    };
    for s in sizes {
        if keep > 0 && total + s > MAX_PAGE_BYTES {
            break;
        }
        total += s;
        keep += 1;
    }
    let cut = keep < page.len();
    if backward {
        page.drain(..page.len() - keep);
    } else {
        page.truncate(keep);
    }
    (page, cut)
}

fn result_message(from: &str, to: &str, q: &Query, a: &Archived, inner: Element) -> Element {
    el("message", ns::CLIENT)
        .attr("from", from)
        .attr("to", to)
        .attr("id", crate::core::random_hex(8))
        .child(
            el("result", NS)
                .attr_opt("queryid", q.queryid.clone())
                .attr("id", public_id(a.id))
                .child(
                    el("forwarded", NS_FORWARD)
                        .child(
                            el("delay", NS_DELAY)
                                .attr("stamp", format_stamp(a.stamp))
                                .build(),
                        )
                        .child(inner)
                        .build(),
                )
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(form: &[(&str, &[&str])], rsm: &[(&str, &str)]) -> Element {
        let x = el("x", NS_DATA)
            .attr("type", "submit")
            .children(form.iter().map(|(var, vals)| {
                el("field", NS_DATA)
                    .attr("var", *var)
                    .children(vals.iter().map(|v| el("value", NS_DATA).text(*v).build()))
                    .build()
            }));
        let set =
            el("set", NS_RSM).children(rsm.iter().map(|(n, v)| el(n, NS_RSM).text(*v).build()));
        el("query", NS)
            .attr("queryid", "q1")
            .child(x.build())
            .child(set.build())
            .build()
    }

    #[test]
    fn pages_are_cut_to_fit_the_session_queue() {
        let big = |id| Archived {
            id,
            stamp: 0,
            stanza: "x".repeat(200 * 1024),
        };
        let (p, cut) = fit((1..=5).map(big).collect(), false);
        assert!(cut);
        assert_eq!(p.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 2]);
        let (p, cut) = fit((1..=5).map(big).collect(), true);
        assert!(cut);
        assert_eq!(p.iter().map(|a| a.id).collect::<Vec<_>>(), vec![4, 5]);
        let huge = Archived {
            id: 9,
            stamp: 0,
            stanza: "x".repeat(MAX_PAGE_BYTES * 2),
        };
        let (p, cut) = fit(vec![huge], false);
        assert_eq!((p.len(), cut), (1, false), "one message always goes");
        let (p, cut) = fit(vec![big(1)], true);
        assert_eq!((p.len(), cut), (1, false));
    }

    #[test]
    fn a_full_query_parses() {
        let q = parse(&query(
            &[
                ("FORM_TYPE", &[NS]),
                ("with", &["bob@x/phone"]),
                ("start", &["2023-11-14T22:13:20Z"]),
                ("after-id", &["a"]),
                ("ids", &["1", "2"]),
            ],
            &[("max", "1000"), ("before", "")],
        ))
        .expect("parses");
        assert_eq!(q.queryid.as_deref(), Some("q1"));
        assert_eq!(
            q.with.map(|w| w.to_string()).as_deref(),
            Some("bob@x/phone")
        );
        assert_eq!(q.start, Some(1_700_000_000_000_000));
        assert_eq!((q.after_id, q.ids), (Some(10), vec![1, 2]));
        assert_eq!(q.max, MAX_PAGE, "max is capped");
        assert_eq!(q.before, Some(None), "empty before: the last page");
    }

    #[test]
    fn bad_queries_are_refused_with_the_right_condition() {
        let cond = |form: &[(&str, &[&str])], rsm: &[(&str, &str)]| {
            parse(&query(form, rsm)).err().map(|e| e.condition)
        };
        assert_eq!(
            cond(&[("FORM_TYPE", &["urn:other"])], &[]),
            Some("bad-request")
        );
        assert_eq!(cond(&[("colour", &["red"])], &[]), Some("bad-request"));
        assert_eq!(cond(&[("start", &["soon"])], &[]), Some("bad-request"));
        assert_eq!(cond(&[("with", &["@@"])], &[]), Some("bad-request"));
        assert_eq!(cond(&[], &[("max", "many")]), Some("bad-request"));
        assert_eq!(
            cond(&[("after-id", &["not-an-id"])], &[]),
            Some("item-not-found")
        );
        assert_eq!(cond(&[], &[("after", "zz")]), Some("item-not-found"));
        assert_eq!(
            cond(&[], &[("after", "1"), ("before", "2")]),
            Some("bad-request")
        );
        assert_eq!(cond(&[], &[]), None);
    }
}
