//! The `kith` command: run the server, manage accounts.

mod config;
mod systemd;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Kith: a private chat server for a household, in one box.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without one, a built-in default for localhost is used.
    #[arg(long, short, env = "KITH_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or Ctrl-C.
    Serve,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage message history (the archive).
    #[command(subcommand)]
    History(HistoryCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from standard input.
    Add {
        jid: String,
        /// The account runs the box (the admin pages); otherwise a member.
        #[arg(long)]
        admin: bool,
    },
    /// Change an account's password; the new password is read from standard input.
    /// Signs out the account's browsers and password-free login tokens.
    Passwd { jid: String },
    /// Show or set an account's role: `admin` (runs the box) or `member`.
    Role { jid: String, role: Option<String> },
    /// Sign out every browser signed in to the account's web pages.
    SignOut { jid: String },
    /// Delete an account and everything stored for it.
    Del { jid: String },
    /// List accounts.
    List,
    /// List the devices holding password-free login tokens (FAST) for an account.
    Tokens { jid: String },
    /// Revoke the password-free login tokens of an account (e.g. a lost phone):
    /// of one device (`--device ID`, as `kith user tokens` lists it) or of all.
    RevokeTokens {
        jid: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// Set how many days of message history an account keeps: a number
    /// (0 = forever) or `default` for the server's `archive.retention_days`.
    Retention { jid: String, days: String },
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Delete now the messages that are past their account's retention.
    Prune,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kith: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kith: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::User(cmd) => user(config, cmd).await,
            Command::History(cmd) => history(config, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: kith_server::Config) -> Result<(), String> {
    let domain = config.domain.clone();
    let web_config = kith_web::WebConfig {
        http: config.listen.http,
        https: config.listen.https,
        ..Default::default()
    };
    let server = kith_server::Server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    // The web pod (HTTP, HTTPS, WebSocket) runs on the XMPP server's handle.
    let web = kith_web::Web::start(server.web(), web_config)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(http = ?web.addrs().http, https = ?web.addrs().https, "web pod ready");
    if let Some(url) = web.addrs().https.map(|a| page_url(&domain, a)) {
        tracing::info!("open {url} in a browser to sign in");
    }
    tracing::info!(%domain, c2s = ?server.addrs().c2s, c2s_tls = ?server.addrs().c2s_tls, "kith ready");
    systemd::ready();
    let watchdog = systemd::spawn_watchdog();
    wait_for_signal().await;
    tracing::info!("shutting down");
    systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    web.shutdown().await;
    server.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

/// The address of the web pod's start page: the domain when the listener
/// answers for it (all interfaces, or loopback with the domain `localhost`),
/// else the listener's own address. The port is left out when it is 443.
fn page_url(domain: &str, addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    let host = if ip.is_unspecified() || (ip.is_loopback() && domain == "localhost") {
        domain.to_string()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    match addr.port() {
        443 => format!("https://{host}/"),
        port => format!("https://{host}:{port}/"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        return Err("no password given on standard input".into());
    }
    Ok(pw)
}

async fn user(config: kith_server::Config, cmd: UserCommand) -> Result<(), String> {
    let accounts = kith_server::Accounts::open(&config)
        .await
        .map_err(|e| e.to_string())?;
    let r = match cmd {
        UserCommand::Add { jid, admin } => {
            let pw = read_password()?;
            let r = accounts.add(&jid, &pw).await;
            let r = match r {
                Ok(()) if admin => accounts.set_role(&jid, kith_server::Role::Admin).await,
                r => r,
            };
            r.map(|()| match admin {
                true => println!("created {jid} (admin)"),
                false => println!("created {jid}"),
            })
        }
        UserCommand::Role { jid, role } => match role.as_deref() {
            None => accounts
                .role(&jid)
                .await
                .map(|r| println!("{jid} is {}", r.as_str())),
            Some(r) => {
                let role = match r {
                    "admin" => kith_server::Role::Admin,
                    "member" => kith_server::Role::Member,
                    other => {
                        accounts.close().await;
                        return Err(format!("role: '{other}' is not 'admin' or 'member'"));
                    }
                };
                accounts
                    .set_role(&jid, role)
                    .await
                    .map(|()| println!("{jid} is now {}", role.as_str()))
            }
        },
        UserCommand::SignOut { jid } => accounts
            .sign_out_browsers(&jid)
            .await
            .map(|n| println!("signed out {n} browser(s) of {jid}")),
        UserCommand::Passwd { jid } => {
            let pw = read_password()?;
            accounts
                .passwd(&jid, &pw)
                .await
                .map(|()| println!("changed the password of {jid}"))
        }
        UserCommand::Del { jid } => accounts
            .delete(&jid)
            .await
            .map(|()| println!("deleted {jid}")),
        UserCommand::List => accounts.list().await.map(|l| {
            for j in l {
                println!("{j}");
            }
        }),
        UserCommand::Tokens { jid } => accounts.tokens(&jid).await.map(|l| {
            if l.is_empty() {
                println!("{jid} has no login tokens");
            }
            for t in l {
                println!(
                    "{}\tsoftware={:?}\tdevice={:?}\tissued={}\texpires={}\tlast_used={}",
                    t.agent_id,
                    t.software,
                    t.device,
                    kith_server::fast_datetime(t.issued_at),
                    kith_server::fast_datetime(t.expires_at),
                    t.last_used
                        .map(kith_server::fast_datetime)
                        .unwrap_or_else(|| "never".into()),
                );
            }
        }),
        UserCommand::RevokeTokens { jid, device } => accounts
            .revoke_tokens(&jid, device.as_deref())
            .await
            .map(|n| println!("revoked the login tokens of {n} device(s) of {jid}")),
        UserCommand::Retention { jid, days } => {
            let parsed = match days.as_str() {
                "default" => None,
                n => Some(n.parse::<u32>().map_err(|_| {
                    format!("retention: '{n}' is not a number of days or 'default'")
                })?),
            };
            accounts
                .set_retention(&jid, parsed)
                .await
                .map(|()| match parsed {
                    None => println!("{jid} keeps history for the server's default"),
                    Some(0) => println!("{jid} keeps history forever"),
                    Some(d) => println!("{jid} keeps history for {d} days"),
                })
        }
    };
    accounts.close().await;
    r.map_err(|e| e.to_string())
}

async fn history(config: kith_server::Config, cmd: HistoryCommand) -> Result<(), String> {
    let accounts = kith_server::Accounts::open(&config)
        .await
        .map_err(|e| e.to_string())?;
    let r = match cmd {
        HistoryCommand::Prune => accounts
            .prune_history()
            .await
            .map(|n| println!("deleted {n} expired messages")),
    };
    accounts.close().await;
    r.map_err(|e| e.to_string())
}
