//! The `kith` command: run the server, manage accounts.

mod config;
mod settings;
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
    /// The admin's configuration file (TOML). It wins over every other layer,
    /// and the keys it sets are locked (the box cannot change them).
    #[arg(long, short, env = "KITH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Shipped defaults (TOML; the image's /usr/share/kith/defaults.toml), below
    /// the settings the box writes. Without this and without --config, a
    /// built-in default for localhost is used.
    #[arg(long, env = "KITH_DEFAULTS", global = true)]
    defaults: Option<PathBuf>,
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
    /// Read and change the settings the box keeps in its data directory.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// The box's certificate: what is in use, and renewing it.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Names, issuer, expiry, next renewal and last error.
    Status,
    /// Ask the running service for a new certificate now, and wait for the result.
    Renew {
        /// Longest wait for the result, in seconds.
        #[arg(long, default_value_t = 180)]
        wait: u64,
    },
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Show a setting's value and where it is set (`limits.offline_max`).
    Get { key: String },
    /// Show every setting some file sets, where, and which are locked.
    List,
    /// Change a setting (`domain family.example`, `limits.offline_max 500`);
    /// refused when the configuration file sets it.
    Set { key: String, value: String },
    /// Remove a setting the box wrote: the defaults apply again.
    Unset { key: String },
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
    let sources = config::Sources {
        defaults: cli.defaults.clone(),
        admin: cli.config.clone(),
    };
    // A damaged box settings file is set aside and its good copy put back
    // before anything reads it (errors in the other files come from `load`).
    if let Some(note) = config::Layers::load(&sources)
        .ok()
        .and_then(|l| settings::recover(&l))
    {
        tracing::warn!("{note}");
    }
    let (layers, config) = match config::load(&sources) {
        Ok((layers, config, None)) => {
            settings::keep_good_copy(&layers);
            (layers, config)
        }
        Ok((layers, config, Some(e))) => {
            tracing::warn!(
                "ignoring the box's settings until fixed (kith settings unset KEY): {e}"
            );
            (layers, config)
        }
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
            Command::Serve => serve(sources, layers, config).await,
            Command::User(cmd) => user(config.server, cmd).await,
            Command::History(cmd) => history(config.server, cmd).await,
            Command::Settings(cmd) => settings_cli(layers, cmd).await,
            Command::Cert(cmd) => cert_cli(&config, cmd).await,
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

/// Logging to stderr at `info`, or as `KITH_LOG` says: a level, or
/// `target=level` pairs (`info,kith_server::storage=debug`). A plain target
/// filter, not `EnvFilter`: that one brings a regex engine (about 0.26 MB of
/// code in a `ci` build) for span and field filters Kith never needs.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let (filter, bad) = log_filter(std::env::var("KITH_LOG").ok());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

/// The filter `KITH_LOG` asks for, or the default and why it was ignored.
fn log_filter(value: Option<String>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    match value {
        Some(v) => match v.parse::<tracing_subscriber::filter::Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                default_targets(),
                Some(format!("KITH_LOG={v:?} ignored: {e}")),
            ),
        },
        None => (default_targets(), None),
    }
}

fn default_targets() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
}

/// How often `kith serve` looks at the box's settings file for changes.
const SETTINGS_POLL: Duration = Duration::from_secs(1);

async fn serve(
    sources: config::Sources,
    mut layers: config::Layers,
    mut config: config::Config,
) -> Result<(), String> {
    let mut ready = false;
    let mut watchdog = None;
    // The settings in force before a change, to go back to if the service
    // cannot start with the new ones.
    let mut previous: Option<(config::Layers, config::Config)> = None;
    loop {
        // Taken before the service starts: a change written while it starts
        // (its ports are open before it is done) is seen, not missed.
        let seen = stamp(layers.settings_path());
        let (server, web, certs) = match start_service(config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                if let Some((l, c)) = previous.take() {
                    tracing::error!(
                        "cannot start with the changed settings, back to the previous ones: {e}"
                    );
                    (layers, config) = (l, c);
                    continue;
                }
                // Listeners or TLS files the box wrote never keep it from
                // starting (a port taken since): once more without them.
                match layers.without_box_sections(&["listen", "tls"]) {
                    Some(l) if !ready => {
                        tracing::error!("cannot start; once more without the listeners and TLS files in the box's settings: {e}");
                        config = l.config()?;
                        layers = l;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
        };
        if !ready {
            ready = true;
            systemd::ready();
            watchdog = systemd::spawn_watchdog();
        }
        let next = run_until_change(&server, &sources, &mut layers, seen).await;
        match &next {
            Next::Stop => {
                tracing::info!("shutting down");
                systemd::stopping();
                if let Some(w) = watchdog.take() {
                    w.abort();
                }
            }
            Next::Restart(..) => {
                tracing::info!("settings changed: starting the XMPP service again")
            }
        }
        certs.stop().await;
        web.shutdown().await;
        server.shutdown(Duration::from_secs(10)).await;
        match next {
            Next::Stop => return Ok(()),
            Next::Restart(new) => {
                previous = Some((layers, config));
                (layers, config) = *new;
            }
        }
    }
}

/// The certificate manager of one run of the service.
struct CertManager {
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CertManager {
    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Start the XMPP server, the web pod on it and the certificate manager.
async fn start_service(
    mut config: config::Config,
) -> Result<(kith_server::Server, kith_web::Web, CertManager), String> {
    let domain = config.server.domain.clone();
    let names = kith_server::tls::certificate_names(&config.server);
    let data_dir = config.server.data_dir.clone();
    // With ACME on, the CA's stored certificate is in force from the first
    // handshake (the manager replaces it later without a restart).
    if config.acme.enabled {
        if let Some((cert, key)) = kith_provisioning::stored_files(&data_dir, &names) {
            config.server.tls = Some(kith_server::TlsFiles { cert, key });
        }
    }
    let acme_answers = kith_provisioning::Http01Answers::default();
    let listeners = kith_provisioning::Listeners {
        http: config.server.listen.http.is_some(),
        https: config.server.listen.https.is_some(),
    };
    let web_config = kith_web::WebConfig {
        http: config.server.listen.http,
        https: config.server.listen.https,
        limits: config.web,
        acme: acme_answers.clone(),
    };
    let server = kith_server::Server::start(config.server)
        .await
        .map_err(|e| e.to_string())?;
    // The web pod (HTTP, HTTPS, WebSocket) runs on the XMPP server's handle.
    let web = match kith_web::Web::start(server.web(), web_config).await {
        Ok(w) => w,
        Err(e) => {
            server.shutdown(Duration::from_secs(10)).await;
            return Err(e.to_string());
        }
    };
    tracing::info!(http = ?web.addrs().http, https = ?web.addrs().https, "web pod ready");
    if let Some(url) = web.addrs().https.map(|a| page_url(&domain, a)) {
        tracing::info!("open {url} in a browser to sign in");
    }
    tracing::info!(%domain, c2s = ?server.addrs().c2s, c2s_tls = ?server.addrs().c2s_tls, "kith ready");
    // The stored certificate is in force before this returns; asking the CA
    // (if due) happens in the background.
    let manager = kith_provisioning::Manager::new(
        config.acme,
        &data_dir,
        &names,
        server.cert_store(),
        acme_answers,
        listeners,
    );
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(manager.run(shutdown_rx));
    Ok((server, web, CertManager { shutdown, task }))
}

/// `kith cert status` and `kith cert renew`.
async fn cert_cli(config: &config::Config, cmd: CertCommand) -> Result<(), String> {
    let data_dir = &config.server.data_dir;
    match cmd {
        CertCommand::Status => {
            print!("{}", kith_provisioning::report(data_dir));
            Ok(())
        }
        CertCommand::Renew { wait } => {
            if !config.acme.enabled {
                return Err(
                    "certificates from a CA are off; fix: kith settings set acme.enabled true"
                        .into(),
                );
            }
            let dir = kith_provisioning::AcmeDir::new(data_dir);
            let asked = kith_provisioning::request_renewal(data_dir)
                .map_err(|e| format!("cannot write to {}: {e}", dir.path().display()))?;
            println!("renewal asked for; waiting for the running service (kith serve)");
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            while std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let done = !dir.renew_request().exists();
                let status = kith_provisioning::Status::read(&dir);
                let finished = status.as_ref().is_some_and(|s| {
                    s.last_attempt.is_some_and(|t| t >= asked)
                        && s.next_attempt
                            .is_some_and(|n| n > s.last_attempt.unwrap_or(0))
                });
                if done && finished {
                    return match status.and_then(|s| s.last_error) {
                        None => {
                            print!("{}", kith_provisioning::report(data_dir));
                            Ok(())
                        }
                        Some(e) => Err(e),
                    };
                }
            }
            Err(format!("no answer from the running service within {wait}s; fix: check that kith serve runs (systemctl status kith) and see its log"))
        }
    }
}

/// What identifies one version of the settings file (inode, mtime, length).
type Stamp = (u64, i64, i64, u64);

fn stamp(p: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// What ends one run of the service.
enum Next {
    /// SIGTERM or Ctrl-C.
    Stop,
    /// Settings changed that the running service cannot take (the domain).
    Restart(Box<(config::Layers, config::Config)>),
}

/// Serve until a signal, applying changes of the box's settings file as they
/// come: limits at once, a new domain by starting the service again, the rest
/// at the next start (logged).
async fn run_until_change(
    server: &kith_server::Server,
    sources: &config::Sources,
    layers: &mut config::Layers,
    seen: Option<Stamp>,
) -> Next {
    let mut seen = seen;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(SETTINGS_POLL);
    loop {
        tokio::select! {
            _ = &mut signal => return Next::Stop,
            _ = tick.tick() => {}
        }
        let now = stamp(layers.settings_path());
        if now == seen {
            continue;
        }
        seen = now;
        let (new_layers, new_config) = match config::load(sources) {
            Ok((l, c, None)) => (l, c),
            Ok((_, _, Some(e))) | Err(e) => {
                tracing::warn!("the changed settings are not valid, keeping the old ones: {e}");
                continue;
            }
        };
        let changed = config::changed_keys(&layers.merged(), &new_layers.merged());
        let effects: Vec<_> = changed.iter().map(|k| (k, settings::effect(k))).collect();
        if effects
            .iter()
            .any(|(_, e)| *e == settings::Effect::Reconnect)
        {
            return Next::Restart(Box::new((new_layers, new_config)));
        }
        for (key, effect) in &effects {
            match effect {
                settings::Effect::NeedsRestart => {
                    tracing::warn!(%key, "setting changed; it takes effect when kith starts again")
                }
                _ => tracing::info!(%key, "setting changed; in force now"),
            }
        }
        if effects.iter().any(|(_, e)| *e == settings::Effect::Live) {
            server.set_limits(new_config.server.limits.clone());
        }
        *layers = new_layers;
    }
}

/// `key = value  # set in FILE[, locked]`, as `kith settings get` and `list` print it.
fn entry_line(key: &str, value: &toml::Value, origin: &config::Origin, locked: bool) -> String {
    let locked = if locked { ", locked" } else { "" };
    format!("{key} = {value}\t# set in {origin}{locked}")
}

async fn settings_cli(mut layers: config::Layers, cmd: SettingsCommand) -> Result<(), String> {
    let done = |key: &str, effect: settings::Effect, layers: &config::Layers| {
        println!(
            "{key}: saved in {} ({effect})",
            layers.settings_path().display()
        );
    };
    match cmd {
        SettingsCommand::Get { key } => {
            match (layers.get(&key), layers.where_set(&key)) {
                (Some(v), Some(origin)) => {
                    let locked = settings::locked(&layers, &key).is_some();
                    println!("{}", entry_line(&key, &v, origin, locked));
                }
                _ => {
                    println!("{key}: not set; the built-in default applies (docs/configuration.md)")
                }
            }
            Ok(())
        }
        SettingsCommand::List => {
            for e in layers.entries() {
                println!("{}", entry_line(&e.key, &e.value, &e.origin, e.locked));
            }
            Ok(())
        }
        SettingsCommand::Set { key, value } => {
            let effect = if key == "domain" {
                settings::change_domain(&mut layers, &value).await
            } else {
                settings::set(&mut layers, &key, settings::parse_value(&value))
            }
            .map_err(|e| e.to_string())?;
            done(&key, effect, &layers);
            Ok(())
        }
        SettingsCommand::Unset { key } => {
            let effect = settings::unset(&mut layers, &key).map_err(|e| e.to_string())?;
            done(&key, effect, &layers);
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn kith_log_sets_levels_per_target_and_a_bad_value_falls_back_to_info() {
        let (f, bad) = log_filter(Some("warn,kith_server::storage::archive=debug".into()));
        assert!(bad.is_none());
        assert!(f.would_enable("kith_server::storage::archive", &Level::DEBUG));
        assert!(!f.would_enable("kith_server::router", &Level::INFO));
        assert!(f.would_enable("kith_server::router", &Level::WARN));

        let (f, bad) = log_filter(Some("info,=[[".into()));
        assert!(bad.is_some_and(|b| b.contains("ignored")));
        assert!(f.would_enable("kith_server::router", &Level::INFO));
        assert!(!f.would_enable("kith_server::router", &Level::DEBUG));

        let (f, bad) = log_filter(None);
        assert!(bad.is_none());
        assert!(f.would_enable("kith", &Level::INFO));
    }
}
