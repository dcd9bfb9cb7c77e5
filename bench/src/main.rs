//! kith-bench: a raw-XMPP load generator that measures Kith, Prosody and ejabberd the
//! same way (see `tests/bench/compare.sh` and `docs/benchmarks.md`).
//!
//! It speaks XMPP itself (STARTTLS, SCRAM-SHA-1, bind, presence, messages) so that it is
//! cheap next to the server it loads; every report carries its own CPU time too. Each
//! scenario prints one JSON line on stdout and a readable line on stderr.

mod cert;
mod client;
mod procstat;
mod report;
mod scenario;
mod scram;
mod tls;
mod xml;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rustls::pki_types::ServerName;

use scenario::{
    sessions::{self, SessionsArgs},
    throughput::{self, ThroughputArgs, To},
    Ctx,
};

#[derive(Parser)]
#[command(about = "Raw-XMPP load generator for Kith, Prosody and ejabberd")]
struct Cli {
    /// c2s (STARTTLS) address of the server; loopback only.
    #[arg(long, default_value = "127.0.0.1:5222", global = true)]
    addr: SocketAddr,
    /// XMPP domain of the users.
    #[arg(long, default_value = "localhost", global = true)]
    domain: String,
    /// PEM certificate the server presents (pinned: no other is accepted).
    #[arg(long, default_value = "cert.pem", global = true)]
    cert: PathBuf,
    /// Users are PREFIX1, PREFIX2 ...
    #[arg(long, default_value = "u", global = true)]
    user_prefix: String,
    /// Password of every user.
    #[arg(long, default_value = "bench-pass", global = true)]
    password: String,
    /// Server process to read RSS and CPU from (`/proc/PID`).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Server name written into reports.
    #[arg(long, default_value = "server", global = true)]
    label: String,
    /// Deadline of one login, and of any single read or write, in seconds.
    #[arg(long, default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a self-signed cert.pem and key.pem for --domain into DIR.
    Cert { dir: PathBuf },
    /// Server RSS with no session.
    Idle,
    /// Log COUNT users in, CONCURRENCY at a time, hold them, measure memory and CPU.
    Sessions {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        first_user: usize,
        /// Seconds to wait after the last login before reading RSS.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// Seconds to hold the sessions after measuring.
        #[arg(long, default_value_t = 1)]
        hold: u64,
    },
    /// USERS users in pairs exchange 1:1 messages, WINDOW in flight per sender.
    Throughput {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        first_user: usize,
        /// Address messages to the partner's bare JID (`bare`) or to the full JID its
        /// session bound (`full`).
        #[arg(long, value_enum, default_value_t = To::Bare)]
        to: To,
    },
    /// COUNT logins one after another, over USERS users.
    Latency {
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 1)]
        first_user: usize,
    },
    /// Fill user number USER's message archive with COUNT messages (directly
    /// in Kith's data directory, server stopped), with PEERS contacts in turn.
    MamFill {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        user: usize,
        #[arg(long, default_value_t = 10)]
        peers: usize,
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
    },
    /// Latency of MAM pages (first, last, middle by after-id, one contact) over
    /// user number USER's archive, ROUNDS queries of each kind.
    MamPaging {
        #[arg(long, default_value_t = 1)]
        user: usize,
        #[arg(long, default_value_t = 10)]
        peers: usize,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        #[arg(long, default_value_t = 50)]
        page: usize,
    },
    /// USERS users join one room of the MUC SERVICE (the first creates it); SENDERS of
    /// them send groupchat messages, WINDOW per sender not yet delivered to everyone.
    Muc {
        /// The MUC service: groups.DOMAIN (Kith), conference.DOMAIN (Prosody, ejabberd).
        #[arg(long)]
        service: String,
        /// Local part of the room's JID.
        #[arg(long, default_value = "bench")]
        room: String,
        #[arg(long, default_value_t = 50)]
        users: usize,
        #[arg(long, default_value_t = 5)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        first_user: usize,
    },
    /// Short run of every scenario; exits non-zero on any error or lost message.
    Smoke {
        #[arg(long, default_value_t = 20)]
        users: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Also a short group-chat fan-out through this MUC service (e.g. groups.DOMAIN).
        #[arg(long)]
        muc_service: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Cert { dir } = &cli.command {
        return cert::write_self_signed(&cli.domain, dir);
    }
    if let Command::MamFill {
        data_dir,
        user,
        peers,
        count,
    } = &cli.command
    {
        let args = scenario::mam::PagingArgs {
            user: *user,
            peers: *peers,
            rounds: 0,
            page: 0,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting tokio")?;
        let report = rt.block_on(scenario::mam::fill(
            &cli.domain,
            data_dir,
            &cli.user_prefix,
            args,
            *count,
        ))?;
        report.emit();
        return Ok(());
    }
    anyhow::ensure!(
        cli.addr.ip().is_loopback(),
        "the generator only loads servers on loopback"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let target = client::Target {
        addr: cli.addr,
        server_name: ServerName::try_from(cli.domain.clone()).context("--domain")?,
        domain: cli.domain,
        tls: tls::client_config(&cli.cert)?,
        timeout: Duration::from_secs(cli.timeout),
        password: cli.password,
        user_prefix: cli.user_prefix,
        rng: Arc::new(ring::rand::SystemRandom::new()),
    };
    let ctx = Ctx {
        target,
        server_pid: cli.server_pid,
        label: cli.label,
    };
    let report = match cli.command {
        Command::Cert { .. } | Command::MamFill { .. } => return Ok(()),
        Command::MamPaging {
            user,
            peers,
            rounds,
            page,
        } => {
            let args = scenario::mam::PagingArgs {
                user,
                peers,
                rounds,
                page,
            };
            scenario::mam::paging(&ctx, args).await?
        }
        Command::Smoke {
            users,
            seconds,
            muc_service,
        } => return scenario::smoke::smoke(&ctx, users, seconds, muc_service).await,
        Command::Muc {
            service,
            room,
            users,
            senders,
            window,
            duration,
            first_user,
        } => {
            let args = scenario::muc::MucArgs {
                users,
                senders,
                window,
                duration: Duration::from_secs(duration),
                service,
                room,
                first_user,
            };
            scenario::muc::muc(&ctx, &args).await?
        }
        Command::Idle => sessions::idle(&ctx)?,
        Command::Sessions {
            count,
            concurrency,
            first_user,
            settle,
            hold,
        } => {
            let args = SessionsArgs {
                count,
                concurrency,
                first_user,
                settle: Duration::from_secs(settle),
                hold: Duration::from_secs(hold),
            };
            sessions::sessions(&ctx, args).await?
        }
        Command::Throughput {
            users,
            window,
            duration,
            first_user,
            to,
        } => {
            let args = ThroughputArgs {
                users,
                window,
                duration: Duration::from_secs(duration),
                first_user,
                to,
            };
            throughput::throughput(&ctx, args).await?
        }
        Command::Latency {
            count,
            users,
            first_user,
        } => sessions::latency(&ctx, count, users, first_user).await?,
    };
    report.emit();
    Ok(())
}
