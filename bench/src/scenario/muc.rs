//! `muc`: fan-out of one group chat (XEP-0045). `users` users join one room, the first
//! one creating it (instant room) and granting the others membership (Kith's rooms are
//! members-only by default; elsewhere the grant changes nothing); then `senders` of them
//! send `<message type='groupchat'/>` for a fixed time.
//!
//! Every occupant, the sender included (the room reflects its message), must receive
//! every message. A message leaves its sender's window of `window` messages once *all*
//! occupants have read it, so the load adapts to the slowest occupant and nothing piles
//! up in the server unboundedly. Each receiver measures the delivery latency from the
//! send time written in the body and checks the order per sender. Anything sent but not
//! delivered to every occupant after a drain period counts as lost. At the end the owner
//! destroys the room (so persistent rooms do not accumulate between runs). The report
//! also says how many joiners the room told it archives (status 170) and how many
//! deliveries carried a `<stanza-id/>`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::{watch, Semaphore},
    task::JoinSet,
    time::{sleep, timeout, timeout_at, Instant},
};
use tokio_rustls::client::TlsStream;

use super::{throughput::log_in_all, Ctx};
use crate::{
    client::{self, Session},
    procstat::Pair,
    report::{percentile, Report},
    xml::{self, Item, Splitter},
};

type Tls = TlsStream<TcpStream>;

const MUC: &str = "http://jabber.org/protocol/muc";
/// Most latency samples kept per receiver (bounds memory on long runs).
const MAX_SAMPLES: usize = 400_000;
/// Longest a sender waits for room in its window before calling the run stalled.
const STALL: Duration = Duration::from_secs(10);
/// How long in-flight messages may take to reach everyone once sending stopped.
const DRAIN: Duration = Duration::from_secs(15);

/// Parameters of the `muc` scenario.
#[derive(Debug, Clone)]
pub struct MucArgs {
    /// Occupants (users `first_user ..`); the first one owns the room.
    pub users: usize,
    /// The first `senders` occupants send.
    pub senders: usize,
    /// Messages per sender not yet delivered to every occupant.
    pub window: usize,
    pub duration: Duration,
    /// The MUC service (`groups.localhost`, `conference.localhost`).
    pub service: String,
    /// Local part of the room's JID.
    pub room: String,
    pub first_user: usize,
}

/// One sender's window: how many occupants still have to read each message in flight.
struct Sender {
    window: Semaphore,
    /// Slot `seq % window`: occupants that have not yet read message `seq`.
    pending: Vec<AtomicU32>,
    sent: AtomicU64,
}

/// What the tasks of a run share.
struct Shared {
    senders: Vec<Sender>,
    occupants: u32,
    deliveries: AtomicU64,
    /// Deliveries carrying an XEP-0359 `<stanza-id/>` (Prosody and ejabberd add it only
    /// when the room archived the message; Kith adds one to every room message).
    with_stanza_id: AtomicU64,
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    out_of_order: u64,
}

/// Runs the scenario.
pub async fn muc(ctx: &Ctx, args: &MucArgs) -> Result<Report> {
    ensure!(args.users >= 2, "users must be ≥ 2");
    ensure!(
        (1..=args.users).contains(&args.senders),
        "senders must be between 1 and users"
    );
    ensure!(args.window > 0, "window must be > 0");
    ensure!(!args.service.is_empty(), "--service is required");
    let room = format!("{}@{}", args.room, args.service);
    let start = Pair::now(ctx.server_pid)?;
    let mut sessions = log_in_all(ctx, args.first_user, args.users, "muc").await?;
    let logged_in = Pair::now(ctx.server_pid)?;

    // The owner creates the room, then everybody else joins at once.
    let setup_start = Instant::now();
    let others = sessions.split_off(1);
    let mut owner = sessions.pop().ok_or_else(|| anyhow!("no owner session"))?;
    let owner_nick = ctx.target.user(args.first_user);
    let created = join(&mut owner, &room, &owner_nick, ctx.target.timeout)
        .await
        .with_context(|| format!("{owner_nick} creating {room}"))?
        .created;
    if created {
        instant_room(&mut owner, &room, ctx.target.timeout).await?;
    }
    let members: Vec<String> = (1..args.users)
        .map(|i| {
            format!(
                "{}@{}",
                ctx.target.user(args.first_user + i),
                ctx.target.domain
            )
        })
        .collect();
    grant_membership(&mut owner, &room, &members, ctx.target.timeout).await?;
    let setup_s = setup_start.elapsed().as_secs_f64();
    let join_start = Instant::now();
    let (mut sessions, told_archived) = join_all(ctx, args, &room, owner, others).await?;
    let join_s = join_start.elapsed().as_secs_f64();
    // Let the join presences finish their fan-out before measuring.
    sleep(Duration::from_millis(500)).await;
    let joined = Pair::now(ctx.server_pid)?;

    let shared = Arc::new(Shared {
        senders: (0..args.senders)
            .map(|_| Sender {
                window: Semaphore::new(args.window),
                pending: (0..args.window).map(|_| AtomicU32::new(0)).collect(),
                sent: AtomicU64::new(0),
            })
            .collect(),
        occupants: u32::try_from(args.users).context("too many users")?,
        deliveries: AtomicU64::new(0),
        with_stanza_id: AtomicU64::new(0),
    });
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (end_tx, end_rx) = watch::channel(false);
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    let mut idle_halves = Vec::new();
    let mut errors = Vec::new();
    for (i, session) in sessions.drain(..).enumerate() {
        let (rd, wr) = tokio::io::split(session.stream);
        if i < args.senders {
            let (shared, stop, to) = (shared.clone(), stop.clone(), room.clone());
            writers.spawn(async move {
                let half = write_loop(wr, i, &to, &shared, &stop, epoch).await;
                (i, half)
            });
        } else {
            idle_halves.push((i, wr));
        }
        let (shared, end) = (shared.clone(), end_rx.clone());
        let splitter = session.splitter;
        readers.spawn(async move {
            let seen = read_loop(rd, splitter, i, &shared, end, epoch).await;
            (i, seen)
        });
    }

    let before = Pair::now(ctx.server_pid)?;
    let delivered_before = shared.deliveries.load(Ordering::Relaxed);
    let sent_before = total_sent(&shared);
    sleep(args.duration).await;
    let after = Pair::now(ctx.server_pid)?;
    let delivered_in_window = shared.deliveries.load(Ordering::Relaxed) - delivered_before;
    let sent_in_window = total_sent(&shared) - sent_before;
    stop.store(true, Ordering::Relaxed);

    let mut write_halves: Vec<Option<WriteHalf<Tls>>> = (0..args.users).map(|_| None).collect();
    for (i, wr) in idle_halves {
        write_halves[i] = Some(wr);
    }
    let writers_done = timeout(STALL + Duration::from_secs(5), async {
        while let Some(joined) = writers.join_next().await {
            match joined {
                Ok((i, Ok(half))) => write_halves[i] = Some(half),
                Ok((_, Err(e))) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("writer task: {e}")),
            }
        }
    })
    .await;
    if writers_done.is_err() {
        writers.abort_all();
        errors.push("writers did not stop".into());
    }
    let sent = total_sent(&shared);
    let expected = sent * u64::from(shared.occupants);
    let drain_deadline = Instant::now() + DRAIN;
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        sleep(Duration::from_millis(20)).await;
    }
    let delivered = shared.deliveries.load(Ordering::Relaxed);
    let _ = end_tx.send(true);

    let mut seen = Seen::default();
    let mut owner_read = None;
    let readers_done = timeout(Duration::from_secs(10), async {
        while let Some(joined) = readers.join_next().await {
            match joined {
                Ok((i, Ok((s, rd, splitter)))) => {
                    seen.latencies_us.extend(s.latencies_us);
                    seen.out_of_order += s.out_of_order;
                    if i == 0 {
                        owner_read = Some((rd, splitter));
                    }
                }
                Ok((_, Err(e))) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("reader task: {e}")),
            }
        }
    })
    .await;
    if readers_done.is_err() {
        readers.abort_all();
        errors.push("readers did not stop".into());
    }
    let destroyed = match (owner_read, write_halves[0].take()) {
        (Some((rd, splitter)), Some(wr)) => {
            let mut owner = Session {
                stream: rd.unsplit(wr),
                splitter,
                jid: String::new(),
            };
            let ok = destroy(&mut owner, &room, ctx.target.timeout).await;
            owner.close().await;
            ok.is_ok()
        }
        _ => false,
    };
    for mut half in write_halves.into_iter().flatten() {
        let _ = timeout(Duration::from_secs(1), async {
            let _ = half.write_all(b"</stream:stream>").await;
            let _ = half.shutdown().await;
        })
        .await;
    }

    seen.latencies_us.sort_unstable();
    let secs = args.duration.as_secs_f64();
    let server_cpu = after.server_cpu_since(&before);
    let mut r = Report::new("muc", &ctx.label);
    r.num("users", args.users as f64)
        .num("senders", args.senders as f64)
        .num("window", args.window as f64)
        .num("seconds", secs)
        .num("sent", sent as f64)
        .num("deliveries", delivered as f64)
        .num("expected_deliveries", expected as f64)
        .num("lost", expected.saturating_sub(delivered) as f64)
        .num("out_of_order", seen.out_of_order as f64)
        .num("joins_told_archived", told_archived as f64)
        .num(
            "with_stanza_id",
            shared.with_stanza_id.load(Ordering::Relaxed) as f64,
        )
        .num("errors", errors.len() as f64)
        .num("setup_s", setup_s)
        .num("join_s", join_s)
        .num("msgs_per_s", sent_in_window as f64 / secs)
        .num("deliveries_per_s", delivered_in_window as f64 / secs)
        .num("server_cpu_s", server_cpu)
        .num(
            "deliveries_per_server_cpu_s",
            if server_cpu > 0.0 {
                delivered_in_window as f64 / server_cpu
            } else {
                0.0
            },
        )
        .num("client_cpu_s", after.client_cpu_since(&before))
        .num("server_rss_start_kib", start.server_rss_kib())
        .num("server_rss_logged_in_kib", logged_in.server_rss_kib())
        .num("server_rss_joined_kib", joined.server_rss_kib())
        .num("server_rss_kib", after.server_rss_kib())
        .num(
            "lat_p50_ms",
            percentile(&seen.latencies_us, 0.5) as f64 / 1000.0,
        )
        .num(
            "lat_p99_ms",
            percentile(&seen.latencies_us, 0.99) as f64 / 1000.0,
        )
        .num("room_destroyed", if destroyed { 1.0 } else { 0.0 });
    if let Some(e) = errors.first() {
        r.text("first_error", e);
    }
    Ok(r)
}

fn total_sent(shared: &Shared) -> u64 {
    shared
        .senders
        .iter()
        .map(|s| s.sent.load(Ordering::Relaxed))
        .sum()
}

async fn write_all(s: &mut Session, data: &str, deadline: Instant) -> Result<()> {
    timeout_at(deadline, s.stream.write_all(data.as_bytes()))
        .await
        .map_err(|_| anyhow!("timed out writing"))??;
    Ok(())
}

/// Reads the next stanza of a session that is not yet split, up to `deadline`.
async fn next_stanza(s: &mut Session, deadline: Instant) -> Result<String> {
    match client::next_item(&mut s.stream, &mut s.splitter, deadline).await? {
        Item::Stanza(st) if xml::name(&st) == "stream:error" => bail!("stream error: {st}"),
        Item::Stanza(st) => Ok(st),
        Item::Header(h) => bail!("unexpected stream header {h}"),
        Item::End => bail!("server ended the stream"),
    }
}

/// What a join's self-presence said.
#[derive(Debug, Clone, Copy)]
struct Joined {
    /// Status 201: this join created the room.
    created: bool,
    /// Status 170: the room says it archives its messages.
    archived: bool,
}

/// Sends the join presence (no history) and waits for the self-presence (status 110).
async fn join(s: &mut Session, room: &str, nick: &str, limit: Duration) -> Result<Joined> {
    let deadline = Instant::now() + limit;
    let me = format!("{room}/{nick}");
    write_all(
        s,
        &format!("<presence to='{me}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"),
        deadline,
    )
    .await?;
    loop {
        let st = next_stanza(s, deadline)
            .await
            .context("waiting for the self-presence")?;
        if xml::name(&st) != "presence" || xml::attr(&st, "from") != Some(me.as_str()) {
            continue;
        }
        ensure!(
            xml::attr(&st, "type") != Some("error"),
            "join refused: {st}"
        );
        if has_status(&st, "110") {
            return Ok(Joined {
                created: has_status(&st, "201"),
                archived: has_status(&st, "170"),
            });
        }
    }
}

fn has_status(stanza: &str, code: &str) -> bool {
    stanza.contains(&format!("code='{code}'")) || stanza.contains(&format!("code=\"{code}\""))
}

/// Sends `iq` (whose id is `id`) and waits for its result.
async fn iq(s: &mut Session, id: &str, iq: &str, deadline: Instant) -> Result<String> {
    write_all(s, iq, deadline).await?;
    loop {
        let st = next_stanza(s, deadline).await?;
        if xml::name(&st) == "iq" && xml::attr(&st, "id") == Some(id) {
            ensure!(
                xml::attr(&st, "type") == Some("result"),
                "{id} failed: {st}"
            );
            return Ok(st);
        }
    }
}

/// Accepts the default configuration (XEP-0045 §10.1.2, instant room).
async fn instant_room(s: &mut Session, room: &str, limit: Duration) -> Result<()> {
    let request = format!(
        "<iq type='set' to='{room}' id='instant'><query xmlns='{MUC}#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    );
    iq(s, "instant", &request, Instant::now() + limit)
        .await
        .context("instant room")?;
    Ok(())
}

/// Makes every user in `jids` a member (one request each, all written before reading).
async fn grant_membership(
    s: &mut Session,
    room: &str,
    jids: &[String],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut out = String::new();
    for (k, jid) in jids.iter().enumerate() {
        out.push_str(&format!(
            "<iq type='set' to='{room}' id='member{k}'><query xmlns='{MUC}#admin'>\
             <item affiliation='member' jid='{jid}'/></query></iq>"
        ));
    }
    write_all(s, &out, deadline).await?;
    let mut answered = 0;
    while answered < jids.len() {
        let st = next_stanza(s, deadline)
            .await
            .context("granting membership")?;
        let is_ours = xml::name(&st) == "iq"
            && xml::attr(&st, "id").is_some_and(|id| id.starts_with("member"));
        if !is_ours {
            continue;
        }
        ensure!(
            xml::attr(&st, "type") == Some("result"),
            "granting membership failed: {st}"
        );
        answered += 1;
    }
    Ok(())
}

/// Every non-owner joins at once; returns all sessions, owner first, in user order,
/// and how many joiners the room told it archives (status 170).
async fn join_all(
    ctx: &Ctx,
    args: &MucArgs,
    room: &str,
    owner: Session,
    others: Vec<Session>,
) -> Result<(Vec<Session>, usize)> {
    let mut set = JoinSet::new();
    for (k, mut s) in others.into_iter().enumerate() {
        let i = k + 1;
        let nick = ctx.target.user(args.first_user + i);
        let (room, limit) = (room.to_string(), ctx.target.timeout);
        set.spawn(async move {
            let joined = join(&mut s, &room, &nick, limit)
                .await
                .with_context(|| format!("{nick} joining {room}"))?;
            Ok::<_, anyhow::Error>((i, s, joined.archived))
        });
    }
    let mut sessions: Vec<Option<Session>> = (0..args.users).map(|_| None).collect();
    sessions[0] = Some(owner);
    let mut told_archived = 0;
    let limit = ctx.target.timeout * 2;
    let result = timeout(limit, async {
        while let Some(joined) = set.join_next().await {
            let (i, s, archived) = joined.map_err(|e| anyhow!("join task: {e}"))??;
            sessions[i] = Some(s);
            told_archived += usize::from(archived);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match result {
        Ok(r) => r?,
        Err(_) => bail!("joins did not finish in {limit:?}"),
    }
    let sessions = sessions
        .into_iter()
        .map(|s| s.ok_or_else(|| anyhow!("a session is missing")))
        .collect::<Result<_>>()?;
    Ok((sessions, told_archived))
}

/// Sends groupchat messages while there is room in the window and time left. Messages
/// that are ready go out together in one write.
async fn write_loop(
    mut wr: WriteHalf<Tls>,
    me: usize,
    room: &str,
    shared: &Shared,
    stop: &AtomicBool,
    epoch: Instant,
) -> Result<WriteHalf<Tls>> {
    let sender = &shared.senders[me];
    let slots = sender.pending.len() as u64;
    let mut seq = 0u64;
    let mut out = String::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let permit = timeout(STALL, sender.window.acquire())
            .await
            .map_err(|_| anyhow!("sender {me} stalled: no full delivery for {STALL:?}"))??;
        permit.forget();
        let mut batch = 1;
        while let Ok(p) = sender.window.try_acquire() {
            p.forget();
            batch += 1;
        }
        out.clear();
        let ts = epoch.elapsed().as_micros();
        for _ in 0..batch {
            // Armed before the write, so no receiver can see the message first.
            sender.pending[(seq % slots) as usize].store(shared.occupants, Ordering::Release);
            out.push_str(&format!(
                "<message to='{room}' type='groupchat' id='g{me}-{seq}'><body>{me} {seq} {ts}</body></message>"
            ));
            seq += 1;
        }
        timeout(STALL, wr.write_all(out.as_bytes()))
            .await
            .map_err(|_| anyhow!("sender {me}: write stalled"))??;
        sender.sent.fetch_add(batch, Ordering::Relaxed);
    }
    Ok(wr)
}

/// Reads one occupant's stream: counts the senders' messages and, when this occupant
/// is the last to read one, gives its sender room in the window. Returns the read half
/// when told to end.
async fn read_loop(
    mut rd: ReadHalf<Tls>,
    mut splitter: Splitter,
    me: usize,
    shared: &Shared,
    mut end: watch::Receiver<bool>,
    epoch: Instant,
) -> Result<(Seen, ReadHalf<Tls>, Splitter)> {
    let mut seen = Seen::default();
    let mut expected = vec![0u64; shared.senders.len()];
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        let item = tokio::select! {
            _ = end.changed() => return Ok((seen, rd, splitter)),
            item = client::next_item(&mut rd, &mut splitter, far) => item?,
        };
        let stanza = match item {
            Item::Stanza(s) => s,
            Item::Header(_) => continue,
            Item::End => bail!("occupant {me}: server ended the stream"),
        };
        match xml::name(&stanza) {
            "message" => {}
            "stream:error" => bail!("occupant {me}: {stanza}"),
            _ => continue,
        }
        match xml::attr(&stanza, "type") {
            Some("error") => bail!("occupant {me}: bounced message: {stanza}"),
            Some("groupchat") => {}
            _ => continue,
        }
        // Room history (none was asked for) and the subject are not part of the run.
        if stanza.contains("urn:xmpp:delay") {
            continue;
        }
        let Some((from, seq, ts)) = xml::child_text(&stanza, "body").and_then(parse_body) else {
            continue;
        };
        let Some(sender) = shared.senders.get(from) else {
            continue;
        };
        let now = epoch.elapsed().as_micros() as u64;
        if seen.latencies_us.len() < MAX_SAMPLES {
            seen.latencies_us.push(now.saturating_sub(ts));
        }
        if seq != expected[from] {
            seen.out_of_order += 1;
        }
        expected[from] = seq + 1;
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        if stanza.contains("<stanza-id") {
            shared.with_stanza_id.fetch_add(1, Ordering::Relaxed);
        }
        let slot = &sender.pending[(seq % sender.pending.len() as u64) as usize];
        if slot.fetch_sub(1, Ordering::AcqRel) == 1 {
            sender.window.add_permits(1);
        }
    }
}

/// `SENDER SEQ MICROS` as the writers put it in the body.
fn parse_body(body: &str) -> Option<(usize, u64, u64)> {
    let mut parts = body.split(' ');
    let from = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let ts = parts.next()?.parse().ok()?;
    Some((from, seq, ts))
}

/// Destroys the room (XEP-0045 §10.9), waiting for the result.
async fn destroy(s: &mut Session, room: &str, limit: Duration) -> Result<()> {
    let request = format!(
        "<iq type='set' to='{room}' id='destroy'><query xmlns='{MUC}#owner'>\
         <destroy><reason>benchmark over</reason></destroy></query></iq>"
    );
    iq(s, "destroy", &request, Instant::now() + limit).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        assert_eq!(parse_body("3 17 123456"), Some((3, 17, 123456)));
        assert_eq!(parse_body("3 17"), None);
        assert_eq!(parse_body("hello there"), None);
    }

    #[test]
    fn status_codes_either_quote() {
        assert!(has_status("<status code='110'/>", "110"));
        assert!(has_status("<status code=\"201\"/>", "201"));
        assert!(!has_status("<status code='110'/>", "201"));
    }
}
