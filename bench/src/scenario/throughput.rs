//! `throughput`: users in pairs send each other 1:1 chat messages with at most `window`
//! messages in flight per sender, for a fixed time. A message leaves the window when its
//! receiver reads it; the receiver measures the delivery latency from the send time
//! written in the body, checks the order, and counts. Anything sent but not received
//! after a drain period is lost.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Result};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::{watch, Semaphore},
    task::JoinSet,
    time::{sleep, timeout, Instant},
};
use tokio_rustls::client::TlsStream;

use super::Ctx;
use crate::{
    client::{self, Session},
    procstat::Pair,
    report::{percentile, Report},
    xml::{self, Item, Splitter},
};

type Tls = TlsStream<TcpStream>;

/// `KITH_BENCH_LAT_DUMP=FILE`: write one line per message, "sent_at_us
/// latency_us" (microseconds since the run started), to see when delivery
/// stalls, not just how much (docs/benchmarks.md).
const LAT_DUMP: &str = "KITH_BENCH_LAT_DUMP";
/// Most latency samples kept per receiver (bounds memory on long runs).
const MAX_SAMPLES: usize = 2_000_000;
/// Longest a sender waits for room in its window before calling the run stalled.
const STALL: Duration = Duration::from_secs(10);
/// How long in-flight messages may take to arrive once sending stopped.
const DRAIN: Duration = Duration::from_secs(15);

/// Parameters of the `throughput` scenario.
#[derive(Debug, Clone, Copy)]
pub struct ThroughputArgs {
    pub users: usize,
    pub window: usize,
    pub duration: Duration,
    pub first_user: usize,
    pub to: To,
}

/// How a sender addresses its partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum To {
    /// `user@domain`: the server picks the session(s) (RFC 6121 §8.5.2).
    Bare,
    /// `user@domain/resource`, the partner's bound JID.
    Full,
}

impl To {
    fn name(self) -> &'static str {
        match self {
            To::Bare => "bare",
            To::Full => "full",
        }
    }
}

/// Counters shared by the tasks of one user.
struct Peer {
    /// Room in this user's sending window; the partner's reader gives it back.
    window: Semaphore,
    sent: AtomicU64,
    received: AtomicU64,
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    /// Send times beside `latencies_us`, kept only for [`LAT_DUMP`].
    sent_at_us: Option<Vec<u64>>,
    out_of_order: u64,
}

/// Runs the scenario.
pub async fn throughput(ctx: &Ctx, args: ThroughputArgs) -> Result<Report> {
    ensure!(
        args.users >= 2 && args.users % 2 == 0,
        "users must be even and ≥ 2"
    );
    ensure!(args.window > 0, "window must be > 0");
    let sessions = log_in_all(ctx, args.first_user, args.users, "tp").await?;
    // Let initial presence and its echoes settle before measuring.
    sleep(Duration::from_millis(500)).await;

    let peers: Arc<Vec<Peer>> = Arc::new(
        (0..args.users)
            .map(|_| Peer {
                window: Semaphore::new(args.window),
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
            })
            .collect(),
    );
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (end_tx, end_rx) = watch::channel(false);
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    let mut errors = Vec::new();
    let full: Vec<String> = sessions.iter().map(|s| s.jid.clone()).collect();
    for (i, session) in sessions.into_iter().enumerate() {
        let partner = i ^ 1;
        let to = match args.to {
            To::Bare => bare(
                &ctx.target.user(args.first_user + partner),
                &ctx.target.domain,
            ),
            To::Full => full[partner].clone(),
        };
        let (rd, wr) = tokio::io::split(session.stream);
        let (peers_w, stop_w) = (peers.clone(), stop.clone());
        writers.spawn(async move { write_loop(wr, i, &to, &peers_w, &stop_w, epoch).await });
        let (peers_r, end) = (peers.clone(), end_rx.clone());
        let splitter = session.splitter;
        readers
            .spawn(async move { read_loop(rd, splitter, i, partner, &peers_r, end, epoch).await });
    }

    let before = Pair::now(ctx.server_pid)?;
    let received_before = total(&peers, |p| &p.received);
    sleep(args.duration).await;
    let after = Pair::now(ctx.server_pid)?;
    let received_in_window = total(&peers, |p| &p.received) - received_before;
    stop.store(true, Ordering::Relaxed);

    let mut halves = Vec::new();
    let writers_done = timeout(STALL + Duration::from_secs(5), async {
        while let Some(joined) = writers.join_next().await {
            match joined {
                Ok(Ok(half)) => halves.push(half),
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("writer task: {e}")),
            }
        }
    })
    .await;
    if writers_done.is_err() {
        writers.abort_all();
        errors.push("writers did not stop".into());
    }
    let sent = total(&peers, |p| &p.sent);
    let drain_deadline = Instant::now() + DRAIN;
    while total(&peers, |p| &p.received) < sent && Instant::now() < drain_deadline {
        sleep(Duration::from_millis(20)).await;
    }
    let received = total(&peers, |p| &p.received);
    let _ = end_tx.send(true);

    let mut seen = Seen::default();
    let readers_done = timeout(Duration::from_secs(10), async {
        while let Some(joined) = readers.join_next().await {
            match joined {
                Ok(Ok(s)) => {
                    seen.latencies_us.extend(s.latencies_us);
                    if let Some(sent) = s.sent_at_us {
                        seen.sent_at_us.get_or_insert_with(Vec::new).extend(sent);
                    }
                    seen.out_of_order += s.out_of_order;
                }
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("reader task: {e}")),
            }
        }
    })
    .await;
    if readers_done.is_err() {
        readers.abort_all();
        errors.push("readers did not stop".into());
    }
    for mut half in halves {
        let _ = timeout(Duration::from_secs(1), async {
            let _ = half.write_all(b"</stream:stream>").await;
            let _ = half.shutdown().await;
        })
        .await;
    }

    if let (Ok(path), Some(sent)) = (std::env::var(LAT_DUMP), &seen.sent_at_us) {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (t, l) in sent.iter().zip(&seen.latencies_us) {
            let _ = writeln!(out, "{t} {l}");
        }
        if let Err(e) = std::fs::write(&path, out) {
            errors.push(format!("{LAT_DUMP} {path}: {e}"));
        }
    }
    seen.latencies_us.sort_unstable();
    let secs = args.duration.as_secs_f64();
    let server_cpu = after.server_cpu_since(&before);
    let client_cpu = after.client_cpu_since(&before);
    let lost = sent.saturating_sub(received);
    let mut r = Report::new("throughput", &ctx.label);
    r.num("users", args.users as f64)
        .num("window", args.window as f64)
        .text("to", args.to.name())
        .num("seconds", secs)
        .num("sent", sent as f64)
        .num("received", received as f64)
        .num("lost", lost as f64)
        .num("out_of_order", seen.out_of_order as f64)
        .num("errors", errors.len() as f64)
        .num("msgs_per_s", received_in_window as f64 / secs)
        .num("server_cpu_s", server_cpu)
        .num(
            "msgs_per_server_cpu_s",
            if server_cpu > 0.0 {
                received_in_window as f64 / server_cpu
            } else {
                0.0
            },
        )
        .num("client_cpu_s", client_cpu)
        .num("server_rss_kib", after.server_rss_kib())
        .num(
            "lat_p50_ms",
            percentile(&seen.latencies_us, 0.5) as f64 / 1000.0,
        )
        .num(
            "lat_p99_ms",
            percentile(&seen.latencies_us, 0.99) as f64 / 1000.0,
        );
    if let Some(e) = errors.first() {
        r.text("first_error", e);
    }
    Ok(r)
}

fn bare(user: &str, domain: &str) -> String {
    format!("{user}@{domain}")
}

fn total(peers: &[Peer], field: impl Fn(&Peer) -> &AtomicU64) -> u64 {
    peers.iter().map(|p| field(p).load(Ordering::Relaxed)).sum()
}

/// Logs users `first_user ..` (`users` of them) in with `resource`, 32 at a time, and
/// returns the sessions in user order.
pub(crate) async fn log_in_all(
    ctx: &Ctx,
    first_user: usize,
    users: usize,
    resource: &'static str,
) -> Result<Vec<Session>> {
    let gate = Arc::new(Semaphore::new(32));
    let mut set = JoinSet::new();
    for i in 0..users {
        let (target, gate) = (ctx.target.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let s = client::login(&target, first_user + i, resource, true).await?;
            Ok::<_, anyhow::Error>((i, s))
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..users).map(|_| None).collect();
    let limit = ctx.target.timeout * (2 + (users / 32) as u32);
    let result = timeout(limit, async {
        while let Some(joined) = set.join_next().await {
            let (i, s) = joined.map_err(|e| anyhow!("login task: {e}"))??;
            sessions[i] = Some(s);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match result {
        Ok(r) => r?,
        Err(_) => bail!("logins did not finish in time"),
    }
    sessions
        .into_iter()
        .map(|s| s.ok_or_else(|| anyhow!("a session is missing")))
        .collect()
}

/// Sends messages to the partner while there is room in the window and time left.
/// Messages that are ready go out together in one write.
async fn write_loop(
    mut wr: WriteHalf<Tls>,
    me: usize,
    to: &str,
    peers: &[Peer],
    stop: &AtomicBool,
    epoch: Instant,
) -> Result<WriteHalf<Tls>> {
    let peer = &peers[me];
    let mut seq = 0u64;
    let mut out = String::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let permit = timeout(STALL, peer.window.acquire())
            .await
            .map_err(|_| anyhow!("sender {me} stalled: no delivery for {STALL:?}"))??;
        permit.forget();
        let mut batch = 1;
        while let Ok(p) = peer.window.try_acquire() {
            p.forget();
            batch += 1;
        }
        out.clear();
        let ts = epoch.elapsed().as_micros();
        for _ in 0..batch {
            out.push_str(&format!(
                "<message to='{to}' type='chat' id='m{seq}'><body>{seq} {ts}</body></message>"
            ));
            seq += 1;
        }
        timeout(STALL, wr.write_all(out.as_bytes()))
            .await
            .map_err(|_| anyhow!("sender {me}: write stalled"))??;
        peer.sent.fetch_add(batch, Ordering::Relaxed);
    }
    Ok(wr)
}

/// Reads this user's stream: counts the partner's messages, frees the partner's window.
async fn read_loop(
    mut rd: ReadHalf<Tls>,
    mut splitter: Splitter,
    me: usize,
    partner: usize,
    peers: &[Peer],
    mut end: watch::Receiver<bool>,
    epoch: Instant,
) -> Result<Seen> {
    let mut seen = Seen {
        sent_at_us: std::env::var_os(LAT_DUMP).map(|_| Vec::new()),
        ..Seen::default()
    };
    let mut expected = 0u64;
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        let item = tokio::select! {
            _ = end.changed() => return Ok(seen),
            item = client::next_item(&mut rd, &mut splitter, far) => item?,
        };
        let stanza = match item {
            Item::Stanza(s) => s,
            Item::Header(_) => continue,
            Item::End => bail!("receiver {me}: server ended the stream"),
        };
        match xml::name(&stanza) {
            "message" => {}
            "stream:error" => bail!("receiver {me}: {stanza}"),
            _ => continue,
        }
        if xml::attr(&stanza, "type") == Some("error") {
            bail!("receiver {me}: bounced message: {stanza}");
        }
        let Some((seq, ts)) = xml::child_text(&stanza, "body").and_then(parse_body) else {
            continue;
        };
        let now = epoch.elapsed().as_micros() as u64;
        if seen.latencies_us.len() < MAX_SAMPLES {
            seen.latencies_us.push(now.saturating_sub(ts));
            if let Some(sent) = &mut seen.sent_at_us {
                sent.push(ts);
            }
        }
        if seq != expected {
            seen.out_of_order += 1;
        }
        expected = seq + 1;
        peers[me].received.fetch_add(1, Ordering::Relaxed);
        peers[partner].window.add_permits(1);
    }
}

fn parse_body(body: &str) -> Option<(u64, u64)> {
    let (seq, ts) = body.split_once(' ')?;
    Some((seq.parse().ok()?, ts.parse().ok()?))
}
