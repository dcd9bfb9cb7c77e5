//! MAM paging (XEP-0313 with XEP-0059 RSM) over a large archive: `mam-fill`
//! writes the archive through Kith's own storage code (fast, no XMPP), and
//! `mam-paging` logs the owner in and measures, query by query, the time from
//! sending the `<iq/>` to reading its `<fin/>` result (all `<result/>`
//! messages of the page included) for four kinds of page: the first page, the
//! last page (`<before/>`), a page in the middle (`after-id`), and a page of
//! one contact (`with`) in the middle.

use anyhow::{bail, ensure, Context, Result};
use tokio::{io::AsyncWriteExt, time::Instant};

use super::Ctx;
use crate::{
    client,
    report::{percentile, Report},
    xml::{self, Item},
};

/// Parameters of `mam-paging`.
#[derive(Debug, Clone, Copy)]
pub struct PagingArgs {
    /// The archive's owner is user number `user`.
    pub user: usize,
    /// Its contacts are users `user + 1 ..= user + peers`.
    pub peers: usize,
    /// Queries of each kind.
    pub rounds: usize,
    /// RSM max.
    pub page: usize,
}

/// What one query returned.
struct Page {
    results: usize,
    first: Option<String>,
    last: Option<String>,
}

async fn query(s: &mut client::Session, id: &str, body: &str, deadline: Instant) -> Result<Page> {
    let iq = format!(
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>{body}</query></iq>"
    );
    tokio::time::timeout_at(deadline, s.stream.write_all(iq.as_bytes()))
        .await
        .context("timed out writing")??;
    let mut results = 0;
    loop {
        match client::next_item(&mut s.stream, &mut s.splitter, deadline).await? {
            Item::Stanza(st) if xml::name(&st) == "message" => {
                let ours = st.contains(&format!("queryid='{id}'"))
                    || st.contains(&format!("queryid=\"{id}\""));
                if ours && st.contains("urn:xmpp:mam:2") {
                    results += 1;
                }
            }
            Item::Stanza(st) if xml::name(&st) == "iq" && xml::attr(&st, "id") == Some(id) => {
                ensure!(
                    xml::attr(&st, "type") == Some("result"),
                    "query failed: {st}"
                );
                return Ok(Page {
                    results,
                    first: xml::child_text(&st, "first").map(str::to_string),
                    last: xml::child_text(&st, "last").map(str::to_string),
                });
            }
            Item::Stanza(_) => {}
            other => bail!("unexpected {other:?} during a MAM query"),
        }
    }
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut x = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>urn:xmpp:mam:2</value></field>",
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    x
}

fn rsm(max: usize, extra: &str) -> String {
    format!("<set xmlns='http://jabber.org/protocol/rsm'><max>{max}</max>{extra}</set>")
}

/// `mam-paging`: latency of the four kinds of page, `rounds` times each.
pub async fn paging(ctx: &Ctx, args: PagingArgs) -> Result<Report> {
    let t = &ctx.target;
    let mut s = client::login(t, args.user, "bench", false).await?;
    let deadline = || Instant::now() + t.timeout;
    // Learn the archive's first and last ids (and that it is not empty).
    let first = query(&mut s, "probe1", &rsm(1, ""), deadline()).await?;
    let last = query(&mut s, "probe2", &rsm(1, "<before/>"), deadline()).await?;
    let (Some(first_id), Some(last_id)) = (first.first, last.last) else {
        bail!(
            "the archive of {} is empty: run mam-fill first",
            t.user(args.user)
        );
    };
    let lo = i64::from_str_radix(&first_id, 16).context("archive ids are hex")?;
    let hi = i64::from_str_radix(&last_id, 16).context("archive ids are hex")?;
    let middle = format!("{:x}", lo + (hi - lo) / 2);
    let peer = format!("{}@{}", t.user(args.user + 1), t.domain);
    let kinds: [(&str, String); 4] = [
        ("first_page", rsm(args.page, "")),
        ("last_page", rsm(args.page, "<before/>")),
        (
            "middle_after_id",
            form(&[("after-id", &middle)]) + &rsm(args.page, ""),
        ),
        (
            "with_middle",
            form(&[("with", &peer), ("after-id", &middle)]) + &rsm(args.page, ""),
        ),
    ];
    let mut r = Report::new("mam_paging", &ctx.label);
    r.num("archive_messages", (hi - lo + 1) as f64);
    r.num("page", args.page as f64);
    r.num("rounds", args.rounds as f64);
    for (name, body) in &kinds {
        let mut samples = Vec::with_capacity(args.rounds);
        for i in 0..args.rounds {
            let id = format!("{name}{i}");
            let start = Instant::now();
            let page = query(&mut s, &id, body, deadline()).await?;
            samples.push(start.elapsed().as_micros() as u64);
            ensure!(
                page.results == args.page,
                "{name}: {} results instead of {}",
                page.results,
                args.page
            );
        }
        samples.sort_unstable();
        r.num(
            &format!("{name}_p50_ms"),
            percentile(&samples, 0.50) as f64 / 1000.0,
        );
        r.num(
            &format!("{name}_p99_ms"),
            percentile(&samples, 0.99) as f64 / 1000.0,
        );
    }
    s.close().await;
    Ok(r)
}

/// `mam-fill`: write `count` messages into user number `user`'s archive,
/// with its `peers` contacts in turn, directly into the data directory.
pub async fn fill(
    domain: &str,
    data_dir: &std::path::Path,
    prefix: &str,
    args: PagingArgs,
    count: usize,
) -> Result<Report> {
    let config = kith_server::Config::new(domain, data_dir);
    let peers: Vec<String> = (1..=args.peers)
        .map(|k| format!("{prefix}{}@{domain}", args.user + k))
        .collect();
    let start = Instant::now();
    kith_server::bench_support::fill_archive(
        &config,
        &format!("{prefix}{}", args.user),
        &peers,
        count,
        365,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let secs = start.elapsed().as_secs_f64();
    let mut r = Report::new("mam_fill", "kith");
    r.num("messages", count as f64);
    r.num("seconds", secs);
    r.num("messages_per_s", count as f64 / secs);
    Ok(r)
}
