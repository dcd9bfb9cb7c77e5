//! Support for the `kith-bench` load generator only (cargo feature
//! `bench-support`, off in the `kith` binary's own build): fill an account's
//! message archive fast, through the same storage code the server uses, so
//! MAM paging can be measured over a million messages.

use crate::config::Config;
use crate::registry::Registry;
use crate::storage::archive::NewArchived;

/// Rows per write transaction while filling.
const BATCH: usize = 10_000;

/// Archive `count` chat messages in `user`'s archive (the local part), with
/// the `peers` (bare JIDs) in turn, stamped evenly over the `span_days` up to
/// now, oldest first. Runs the server's migrations if needed.
pub async fn fill_archive(
    config: &Config,
    user: &str,
    peers: &[String],
    count: usize,
    span_days: u32,
) -> Result<(), String> {
    if peers.is_empty() {
        return Err("at least one peer is needed".into());
    }
    let registry = Registry::new(&crate::server::modules());
    let db = crate::server::open_db(config, &registry)
        .await
        .map_err(|e| e.to_string())?;
    let now = crate::mam::rules::now_micros();
    let span = i64::from(span_days) * 86_400_000_000;
    let step = span / count.max(1) as i64;
    let me = format!("{user}@{}", config.domain);
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let texts: Vec<(usize, String)> = (done..done + n)
            .map(|i| {
                let peer = &peers[i % peers.len()];
                (
                    i % peers.len(),
                    format!(
                        "<message xmlns='jabber:client' from='{peer}/phone' to='{me}' \
                         type='chat' id='b{i}'><body>Message number {i}: are we still on \
                         for dinner on Saturday? I can bring dessert.</body>\
                         <origin-id xmlns='urn:xmpp:sid:0' id='o{i}'/></message>"
                    ),
                )
            })
            .collect();
        let rows: Vec<NewArchived<'_>> = texts
            .iter()
            .enumerate()
            .map(|(k, (p, text))| NewArchived {
                username: user,
                with_bare: &peers[*p],
                with_resource: "phone",
                stamp: now - span + (done + k) as i64 * step,
                stanza: text,
            })
            .collect();
        db.archive_store(&rows).await.map_err(|e| e.to_string())?;
        done += n;
    }
    db.close().await;
    Ok(())
}
