//! Scenarios about logging in: `idle` (server RSS, no session), `sessions` (N held
//! sessions: RSS per session, login rate, CPU per login) and `latency` (sequential logins).

use std::{sync::Arc, time::Duration};

use anyhow::{ensure, Result};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
    time::{sleep, timeout, Instant},
};

use super::Ctx;
use crate::{
    client,
    procstat::Pair,
    report::{percentile, Report},
    xml::Item,
};

/// `idle`: the server's memory with no session.
pub fn idle(ctx: &Ctx) -> Result<Report> {
    let now = Pair::now(ctx.server_pid)?;
    let mut r = Report::new("idle", &ctx.label);
    r.num("server_rss_kib", now.server_rss_kib());
    Ok(r)
}

/// Parameters of the `sessions` scenario.
#[derive(Debug, Clone, Copy)]
pub struct SessionsArgs {
    pub count: usize,
    pub concurrency: usize,
    pub first_user: usize,
    pub settle: Duration,
    pub hold: Duration,
}

/// `sessions`: log `count` users in, `concurrency` at a time, hold them all, measure.
pub async fn sessions(ctx: &Ctx, args: SessionsArgs) -> Result<Report> {
    ensure!(
        args.count > 0 && args.concurrency > 0,
        "count and concurrency must be > 0"
    );
    let before = Pair::now(ctx.server_pid)?;
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let (release_tx, release_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<Duration>>(args.count);
    let mut holders = JoinSet::new();
    for i in 0..args.count {
        let target = ctx.target.clone();
        let gate = gate.clone();
        let done = done_tx.clone();
        let mut release = release_rx.clone();
        let n = args.first_user + i;
        holders.spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            let t0 = Instant::now();
            let session = client::login(&target, n, "bench", true).await;
            drop(permit);
            let mut session = match session {
                Ok(s) => {
                    let _ = done.send(Ok(t0.elapsed())).await;
                    drop(done);
                    s
                }
                Err(e) => {
                    let _ = done.send(Err(e)).await;
                    return;
                }
            };
            // Hold: read and drop whatever the server sends until released.
            loop {
                let far = Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    _ = release.changed() => break,
                    item = client::next_item(&mut session.stream, &mut session.splitter, far) => {
                        match item {
                            Ok(Item::Stanza(_)) | Ok(Item::Header(_)) => {}
                            Ok(Item::End) | Err(_) => return,
                        }
                    }
                }
            }
            session.close().await;
        });
    }
    drop(done_tx);

    let mut latencies = Vec::with_capacity(args.count);
    let mut errors = 0usize;
    let mut first_error = None;
    let login_deadline = ctx.target.timeout * (1 + (args.count / args.concurrency) as u32);
    let waited = timeout(login_deadline, async {
        for _ in 0..args.count {
            let Some(result) = done_rx.recv().await else {
                break;
            };
            match result {
                Ok(d) => latencies.push(d.as_micros() as u64),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
            }
        }
    })
    .await;
    if waited.is_err() {
        errors += args.count - latencies.len() - errors;
        first_error.get_or_insert_with(|| "logins did not finish in time".into());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let logged_in = Pair::now(ctx.server_pid)?;
    sleep(args.settle).await;
    let settled = Pair::now(ctx.server_pid)?;
    sleep(args.hold).await;
    let _ = release_tx.send(true);
    let closing = timeout(Duration::from_secs(60), async {
        while holders.join_next().await.is_some() {}
    })
    .await;
    if closing.is_err() {
        holders.abort_all();
    }

    latencies.sort_unstable();
    let ok = latencies.len() as f64;
    let mut r = Report::new("sessions", &ctx.label);
    r.num("count", args.count as f64)
        .num("concurrency", args.concurrency as f64)
        .num("ok", ok)
        .num("errors", errors as f64)
        .num("login_per_s", ok / elapsed)
        .num("login_p50_ms", percentile(&latencies, 0.5) as f64 / 1000.0)
        .num("login_p99_ms", percentile(&latencies, 0.99) as f64 / 1000.0)
        .num("server_rss_before_kib", before.server_rss_kib())
        .num("server_rss_held_kib", settled.server_rss_kib())
        .num(
            "server_kib_per_session",
            (settled.server_rss_kib() - before.server_rss_kib()) / ok.max(1.0),
        )
        .num(
            "server_cpu_ms_per_login",
            logged_in.server_cpu_since(&before) * 1000.0 / ok.max(1.0),
        )
        .num(
            "client_cpu_ms_per_login",
            logged_in.client_cpu_since(&before) * 1000.0 / ok.max(1.0),
        );
    if let Some(e) = first_error {
        r.text("first_error", &e);
    }
    Ok(r)
}

/// `latency`: `count` logins one after another (users cycle over `users`).
pub async fn latency(ctx: &Ctx, count: usize, users: usize, first_user: usize) -> Result<Report> {
    ensure!(count > 0 && users > 0, "count and users must be > 0");
    let before = Pair::now(ctx.server_pid)?;
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut first_error = None;
    for i in 0..count {
        let t0 = Instant::now();
        match client::login(&ctx.target, first_user + i % users, "seq", false).await {
            Ok(session) => {
                latencies.push(t0.elapsed().as_micros() as u64);
                session.close().await;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let after = Pair::now(ctx.server_pid)?;
    latencies.sort_unstable();
    let ok = latencies.len() as f64;
    let mean = latencies.iter().sum::<u64>() as f64 / ok.max(1.0);
    let mut r = Report::new("latency", &ctx.label);
    r.num("count", count as f64)
        .num("ok", ok)
        .num("errors", errors as f64)
        .num("login_p50_ms", percentile(&latencies, 0.5) as f64 / 1000.0)
        .num("login_p99_ms", percentile(&latencies, 0.99) as f64 / 1000.0)
        .num("login_mean_ms", mean / 1000.0)
        .num(
            "server_cpu_ms_per_login",
            after.server_cpu_since(&before) * 1000.0 / ok.max(1.0),
        )
        .num(
            "client_cpu_ms_per_login",
            after.client_cpu_since(&before) * 1000.0 / ok.max(1.0),
        );
    if let Some(e) = first_error {
        r.text("first_error", &e);
    }
    Ok(r)
}
