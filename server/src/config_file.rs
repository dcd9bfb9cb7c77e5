//! The server's keys in the configuration file: their TOML shape (`serde`,
//! unknown keys refused by name) and their validation, in one place. The
//! defaults are the `Default`s of [`crate::config`]; the bounds are here.
//!
//! The appliance reads the file (in layers) and calls [`File::into_config`];
//! the server itself only ever sees the validated [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::Config;

/// The server's keys: the top level of a configuration file (or of one layer
/// of it), every key optional. The file is shared with other crates' sections
/// (the web pod's `[web]`): the appliance hands each top-level key to
/// [`File::read_key`] first, so an error inside a section still names the
/// key and the line.
#[derive(Debug, Default)]
pub struct File {
    pub domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<ListenFile>,
    pub tls: Option<TlsFile>,
    pub limits: LimitsFile,
    pub auth: AuthFile,
    pub archive: ArchiveFile,
    /// External components (XEP-0114): domain → shared secret.
    pub components: BTreeMap<String, String>,
    pub push: PushFile,
    pub ping: PingFile,
    pub s2s: S2sFile,
    pub upload: UploadFile,
    pub muc: MucFile,
    pub time: TimeFile,
}

impl File {
    /// The top-level keys the server owns.
    pub const KEYS: &'static [&'static str] = &[
        "domain",
        "data_dir",
        "listen",
        "tls",
        "limits",
        "auth",
        "archive",
        "components",
        "push",
        "ping",
        "s2s",
        "upload",
        "muc",
        "time",
    ];

    /// Read the value of the top-level `key` from `map` when the key is the
    /// server's (`Ok(true)`); `Ok(false)` leaves it for another crate.
    pub fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "domain" => self.domain = Some(map.next_value()?),
            "data_dir" => self.data_dir = Some(map.next_value()?),
            "listen" => self.listen = Some(map.next_value()?),
            "tls" => self.tls = Some(map.next_value()?),
            "limits" => self.limits = map.next_value()?,
            "auth" => self.auth = map.next_value()?,
            "archive" => self.archive = map.next_value()?,
            "components" => self.components = map.next_value()?,
            "push" => self.push = map.next_value()?,
            "ping" => self.ping = map.next_value()?,
            "s2s" => self.s2s = map.next_value()?,
            "upload" => self.upload = map.next_value()?,
            "muc" => self.muc = map.next_value()?,
            "time" => self.time = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The server's keys alone (a file without other crates' sections).
impl<'de> Deserialize<'de> for File {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = File;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<File, A::Error> {
                let mut file = File::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !file.read_key(&key, &mut map)? {
                        return Err(serde::de::Error::unknown_field(&key, File::KEYS));
                    }
                }
                Ok(file)
            }
        }
        d.deserialize_map(Keys)
    }
}

/// `[time]`: where Kith learns that the clock is synchronised.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeFile {
    /// A file whose existence says the clock is synchronised; `""`: the
    /// clock is always trusted.
    pub sync_flag: Option<PathBuf>,
}

/// `[muc]`: group chats (XEP-0045).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MucFile {
    pub enabled: Option<bool>,
    pub domain: Option<String>,
    pub max_occupants: Option<usize>,
    pub max_rooms_per_user: Option<usize>,
    pub max_history: Option<usize>,
    pub join_rate: Option<u32>,
    pub max_rooms: Option<usize>,
}

/// `[upload]`: HTTP File Upload (XEP-0363).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    pub max_file_size: Option<u64>,
    pub quota: Option<u64>,
    pub retention_days: Option<u64>,
    pub slot_lifetime_secs: Option<u64>,
    pub base_url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    pub retention_days: Option<u32>,
    pub prune_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PushFile {
    pub include_body: Option<bool>,
    pub max_per_account: Option<usize>,
    pub min_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PingFile {
    pub idle_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
}

/// `[s2s]`: federation with other XMPP servers.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S2sFile {
    pub enabled: Option<bool>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub insecure_domains: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub idle_timeout_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub queue: Option<usize>,
    pub stanza_size: Option<usize>,
    pub connections_per_domain: Option<usize>,
    pub stanzas_per_second: Option<u32>,
    pub stanza_burst: Option<u32>,
    pub subscriptions_per_minute: Option<u32>,
    pub subscription_burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub c2s: Option<String>,
    pub c2s_tls: Option<String>,
    pub s2s: Option<String>,
    pub s2s_tls: Option<String>,
    pub http: Option<String>,
    pub https: Option<String>,
    pub component: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub stanza_size: Option<usize>,
    pub connections_per_ip: Option<usize>,
    pub pre_auth_buffer_total: Option<usize>,
    pub auth_failures_per_minute: Option<u32>,
    pub auth_timeout_secs: Option<u64>,
    pub session_queue: Option<usize>,
    pub offline_max: Option<usize>,
    pub pending_subscriptions: Option<usize>,
    pub sm_resume_timeout_secs: Option<u64>,
    pub sm_max_unacked: Option<usize>,
    pub sm_ack_request_every: Option<usize>,
    pub sm_ack_request_interval_secs: Option<u64>,
    pub sm_max_hibernated: Option<usize>,
    pub pep_nodes: Option<usize>,
    pub pep_items: Option<usize>,
    pub pep_item_size: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub scram_iterations: Option<u32>,
    pub fast_token_days: Option<u32>,
}

impl File {
    /// Validate every key over the built-in defaults ([`Config::new`] and the
    /// `Default`s in `config.rs`). An error starts with the key's name
    /// (`limits.stanza_size: …`).
    pub fn into_config(self) -> Result<Config, String> {
        let file = self;
        let domain = file
            .domain
            .unwrap_or_else(|| "localhost".into())
            .to_lowercase();
        if jid::BareJid::new(&domain)
            .map(|j| j.node().is_some())
            .unwrap_or(true)
        {
            return Err(format!("domain: '{domain}' is not a valid domain name"));
        }
        let mut config = crate::Config::new(
            domain,
            file.data_dir.unwrap_or_else(|| "./kith-data".into()),
        );
        config.time_sync = match file.time.sync_flag {
            None => crate::TimeSync::Auto,
            Some(p) if p.as_os_str().is_empty() => crate::TimeSync::Trusted,
            Some(p) if p.is_relative() => {
                return Err(format!(
                    "time.sync_flag: '{}' must be an absolute path (or \"\" to trust the clock)",
                    p.display()
                ))
            }
            Some(p) => crate::TimeSync::Flag(p),
        };
        let listen = file.listen.ok_or("[listen]: no listeners configured")?;
        let addr = |key: &str, v: &Option<String>| -> Result<Option<SocketAddr>, String> {
            v.as_deref()
                .map(|s| {
                    s.parse()
                        .map_err(|_| format!("listen.{key}: '{s}' is not an ADDRESS:PORT"))
                })
                .transpose()
        };
        config.listen = crate::Listen {
            c2s: addr("c2s", &listen.c2s)?,
            c2s_tls: addr("c2s_tls", &listen.c2s_tls)?,
            s2s: addr("s2s", &listen.s2s)?,
            s2s_tls: addr("s2s_tls", &listen.s2s_tls)?,
            http: addr("http", &listen.http)?,
            https: addr("https", &listen.https)?,
            component: addr("component", &listen.component)?,
        };
        if let Some(a) = config.listen.component {
            // The component protocol has no encryption: the secret's proof and
            // every stanza would cross the network in the clear.
            if !a.ip().is_loopback() {
                return Err(format!(
                    "listen.component: '{a}' is not a loopback address (components must run on this machine)"
                ));
            }
        }
        if config.listen.c2s.is_none() && config.listen.c2s_tls.is_none() {
            return Err(
                "[listen]: neither c2s nor c2s_tls is configured, clients could not connect".into(),
            );
        }
        config.tls = file.tls.map(|t| crate::TlsFiles {
            cert: t.cert,
            key: t.key,
        });
        let l = &mut config.limits;
        let lf = file.limits;
        if let Some(v) = lf.stanza_size {
            if !(8 * 1024..=16 * 1024 * 1024).contains(&v) {
                return Err(format!(
                    "limits.stanza_size: {v} is outside 8192..=16777216 bytes"
                ));
            }
            l.stanza_size = v;
        }
        if let Some(v) = lf.connections_per_ip {
            l.connections_per_ip = v;
        }
        if let Some(v) = lf.pre_auth_buffer_total {
            if v != 0 && v < 64 * 1024 {
                return Err(format!(
                    "limits.pre_auth_buffer_total: {v} is below 65536 bytes (0 means unlimited)"
                ));
            }
            l.pre_auth_buffer_total = v;
        }
        if let Some(v) = lf.auth_failures_per_minute {
            l.auth_failures_per_minute = v;
        }
        if let Some(v) = lf.auth_timeout_secs {
            if v == 0 {
                return Err("limits.auth_timeout_secs: must be at least 1".into());
            }
            l.auth_timeout = Duration::from_secs(v);
        }
        if let Some(v) = lf.session_queue {
            if v == 0 {
                return Err("limits.session_queue: must be at least 1".into());
            }
            l.session_queue = v;
        }
        if let Some(v) = lf.offline_max {
            l.offline_max = v;
        }
        if let Some(v) = lf.pending_subscriptions {
            if !(1..=10_000).contains(&v) {
                return Err(format!(
                    "limits.pending_subscriptions: {v} is outside 1..=10000"
                ));
            }
            l.pending_subscriptions = v;
        }
        if let Some(v) = lf.sm_resume_timeout_secs {
            if v > 24 * 3600 {
                return Err(format!(
                    "limits.sm_resume_timeout_secs: {v} is above a day (86400)"
                ));
            }
            l.sm_resume_timeout = Duration::from_secs(v);
        }
        if let Some(v) = lf.sm_max_unacked {
            if !(1..=100_000).contains(&v) {
                return Err(format!("limits.sm_max_unacked: {v} is outside 1..=100000"));
            }
            l.sm_max_unacked = v;
        }
        if let Some(v) = lf.sm_ack_request_every {
            if v == 0 {
                return Err("limits.sm_ack_request_every: must be at least 1".into());
            }
            l.sm_ack_request_every = v;
        }
        if let Some(v) = lf.sm_ack_request_interval_secs {
            if v == 0 {
                return Err("limits.sm_ack_request_interval_secs: must be at least 1".into());
            }
            l.sm_ack_request_interval = Duration::from_secs(v);
        }
        if let Some(v) = lf.sm_max_hibernated {
            l.sm_max_hibernated = v;
        }
        for (key, value, slot) in [
            ("pep_nodes", lf.pep_nodes, &mut l.pep_nodes),
            ("pep_items", lf.pep_items, &mut l.pep_items),
            ("pep_item_size", lf.pep_item_size, &mut l.pep_item_size),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    return Err(format!("limits.{key}: must be at least 1"));
                }
                *slot = v;
            }
        }
        if let Some(d) = file.archive.retention_days {
            config.archive.retention_days = d;
        }
        if let Some(s) = file.archive.prune_interval_secs {
            if s == 0 {
                return Err("archive.prune_interval_secs: must be at least 1".into());
            }
            config.archive.prune_interval = Duration::from_secs(s);
        }
        for (domain, secret) in file.components {
            let d = domain.to_lowercase();
            if jid::BareJid::new(&d)
                .map(|j| j.node().is_some())
                .unwrap_or(true)
                || d == config.domain
            {
                return Err(format!(
                    "components.\"{domain}\": not a valid component domain (a name like push.{})",
                    config.domain
                ));
            }
            if secret.is_empty() {
                return Err(format!("components.\"{domain}\": the secret is empty"));
            }
            config.components.insert(d, crate::Secret(secret));
        }
        let p = &mut config.push;
        if let Some(v) = file.push.include_body {
            p.include_body = v;
        }
        if let Some(v) = file.push.max_per_account {
            if v == 0 {
                return Err("push.max_per_account: must be at least 1".into());
            }
            p.max_per_account = v;
        }
        if let Some(v) = file.push.min_interval_secs {
            p.min_interval = Duration::from_secs(v);
        }
        if let Some(v) = file.ping.idle_secs {
            if v == 0 {
                return Err("ping.idle_secs: must be at least 1".into());
            }
            config.ping.idle = Duration::from_secs(v);
        }
        if let Some(v) = file.ping.timeout_secs {
            if v == 0 {
                return Err("ping.timeout_secs: must be at least 1".into());
            }
            config.ping.timeout = Duration::from_secs(v);
        }
        let u = &mut config.upload;
        let uf = file.upload;
        if let Some(v) = uf.max_file_size {
            if v == 0 {
                return Err("upload.max_file_size: must be at least 1 byte".into());
            }
            u.max_file_size = v;
        }
        if let Some(v) = uf.quota {
            u.quota = v;
        }
        if let Some(v) = uf.retention_days {
            if !(1..=MAX_DAYS).contains(&v) {
                return Err(format!(
                    "upload.retention_days: {v} is outside 1..={MAX_DAYS}"
                ));
            }
            u.retention = Duration::from_secs(v * 86400);
        }
        if let Some(v) = uf.slot_lifetime_secs {
            if v == 0 {
                return Err("upload.slot_lifetime_secs: must be at least 1".into());
            }
            u.slot_lifetime = Duration::from_secs(v);
        }
        if let Some(v) = uf.base_url {
            if !v.starts_with("https://") || v.contains(['?', '#', ' ']) {
                return Err(format!(
                    "upload.base_url: '{v}' is not an https:// origin (like https://kith.example)"
                ));
            }
            u.base_url = Some(v);
        }
        muc(&mut config.muc, &config.domain, file.muc)?;
        if let Some(i) = file.auth.scram_iterations {
            if i < 4096 {
                return Err(format!(
                    "auth.scram_iterations: {i} is below the minimum of 4096"
                ));
            }
            config.scram_iterations = i;
        }
        s2s(&mut config.s2s, file.s2s)?;
        if let Some(d) = file.auth.fast_token_days {
            if !(1..=365).contains(&d) {
                return Err(format!(
                    "auth.fast_token_days: {d} is not between 1 and 365"
                ));
            }
            config.fast_token_lifetime = std::time::Duration::from_secs(u64::from(d) * 86_400);
        }
        durations_in_range(&config)?;
        Ok(config)
    }
}

/// The longest time any setting may name, in days (a century).
const MAX_DAYS: u64 = 36_500;

/// Every time setting is at most [`MAX_DAYS`]: the server adds them to the
/// clock (`Instant::now() + auth_timeout`, an expiry in Unix seconds), which
/// panics or wraps around for values near `u64::MAX` seconds.
fn durations_in_range(c: &crate::Config) -> Result<(), String> {
    let max = Duration::from_secs(MAX_DAYS * 86_400);
    for (key, d) in [
        ("limits.auth_timeout_secs", c.limits.auth_timeout),
        ("limits.sm_resume_timeout_secs", c.limits.sm_resume_timeout),
        (
            "limits.sm_ack_request_interval_secs",
            c.limits.sm_ack_request_interval,
        ),
        ("archive.prune_interval_secs", c.archive.prune_interval),
        ("push.min_interval_secs", c.push.min_interval),
        ("ping.idle_secs", c.ping.idle),
        ("ping.timeout_secs", c.ping.timeout),
        ("upload.retention_days", c.upload.retention),
        ("upload.slot_lifetime_secs", c.upload.slot_lifetime),
        ("s2s.idle_timeout_secs", c.s2s.idle_timeout),
        ("s2s.connect_timeout_secs", c.s2s.connect_timeout),
        ("auth.fast_token_days", c.fast_token_lifetime),
    ] {
        if d > max {
            return Err(format!("{key}: more than {MAX_DAYS} days"));
        }
    }
    Ok(())
}

/// `[muc]` keys over the defaults; every bound must be at least 1.
fn muc(c: &mut crate::MucConfig, domain: &str, f: MucFile) -> Result<(), String> {
    if let Some(v) = f.enabled {
        c.enabled = v;
    }
    if let Some(d) = f.domain {
        let d = d.trim().to_ascii_lowercase();
        if d == domain || d.is_empty() || jid::BareJid::new(&d).is_err() || d.contains('@') {
            return Err(format!(
                "muc.domain: '{d}' is not a service domain (like groups.{domain})"
            ));
        }
        c.domain = Some(d);
    }
    let positive = |name: &str, v: Option<usize>, slot: &mut usize| -> Result<(), String> {
        match v {
            Some(0) => Err(format!("muc.{name}: must be at least 1")),
            Some(v) => {
                *slot = v;
                Ok(())
            }
            None => Ok(()),
        }
    };
    positive("max_occupants", f.max_occupants, &mut c.max_occupants)?;
    positive(
        "max_rooms_per_user",
        f.max_rooms_per_user,
        &mut c.max_rooms_per_user,
    )?;
    positive("max_history", f.max_history, &mut c.max_history)?;
    positive("max_rooms", f.max_rooms, &mut c.max_rooms)?;
    match f.join_rate {
        Some(0) => return Err("muc.join_rate: must be at least 1".into()),
        Some(v) => c.join_rate = v,
        None => {}
    }
    Ok(())
}

/// Validate `[s2s]` into the server's federation settings.
fn s2s(c: &mut crate::S2s, f: S2sFile) -> Result<(), String> {
    if let Some(v) = f.enabled {
        c.enabled = v;
    }
    c.ca_file = f.ca_file;
    let domain = |key: &str, d: &str| -> Result<String, String> {
        let d = d.to_lowercase();
        match jid::BareJid::new(&d) {
            Ok(j) if j.node().is_none() => Ok(d),
            _ => Err(format!("s2s.{key}: '{d}' is not a domain name")),
        }
    };
    for (d, a) in f.hosts {
        let d = domain("hosts", &d)?;
        let addr: SocketAddr = a
            .parse()
            .map_err(|_| format!("s2s.hosts.\"{d}\": '{a}' is not an ADDRESS:PORT"))?;
        c.hosts.insert(d, addr);
    }
    for (key, src, dst) in [
        (
            "insecure_domains",
            f.insecure_domains,
            &mut c.insecure_domains,
        ),
        ("allow", f.allow, &mut c.allow),
        ("deny", f.deny, &mut c.deny),
    ] {
        *dst = src
            .iter()
            .map(|d| domain(key, d))
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = f.idle_timeout_secs {
        if v == 0 {
            return Err("s2s.idle_timeout_secs: must be at least 1".into());
        }
        c.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = f.connect_timeout_secs {
        if v == 0 {
            return Err("s2s.connect_timeout_secs: must be at least 1".into());
        }
        c.connect_timeout = Duration::from_secs(v);
    }
    if let Some(v) = f.queue {
        if !(1..=100_000).contains(&v) {
            return Err(format!("s2s.queue: {v} is outside 1..=100000"));
        }
        c.queue = v;
    }
    if let Some(v) = f.stanza_size {
        if !(64 * 1024..=16 * 1024 * 1024).contains(&v) {
            return Err(format!(
                "s2s.stanza_size: {v} is outside 65536..=16777216 bytes"
            ));
        }
        c.stanza_size = v;
    }
    if let Some(v) = f.connections_per_domain {
        if v == 0 {
            return Err("s2s.connections_per_domain: must be at least 1".into());
        }
        c.connections_per_domain = v;
    }
    // Rates: 0 turns a limit off; a burst is at least 1.
    let bounded =
        |key: &str, v: Option<u32>, range: std::ops::RangeInclusive<u32>, slot: &mut u32| match v {
            Some(v) if !range.contains(&v) => Err(format!(
                "s2s.{key}: {v} is outside {}..={}",
                range.start(),
                range.end()
            )),
            Some(v) => {
                *slot = v;
                Ok(())
            }
            None => Ok(()),
        };
    bounded(
        "stanzas_per_second",
        f.stanzas_per_second,
        0..=1_000_000,
        &mut c.stanzas_per_second,
    )?;
    bounded(
        "stanza_burst",
        f.stanza_burst,
        1..=1_000_000,
        &mut c.stanza_burst,
    )?;
    bounded(
        "subscriptions_per_minute",
        f.subscriptions_per_minute,
        0..=100_000,
        &mut c.subscriptions_per_minute,
    )?;
    bounded(
        "subscription_burst",
        f.subscription_burst,
        1..=100_000,
        &mut c.subscription_burst,
    )?;
    Ok(())
}

/// Whether a new value of `key` (`limits.offline_max`) takes effect in a
/// running server ([`crate::Server::set_limits`]); every other key needs the
/// server to start again. `limits.auth_failures_per_minute` keeps the
/// counters it started with.
pub fn applies_live(key: &str) -> bool {
    key.strip_prefix("limits.")
        .is_some_and(|k| k != "auth_failures_per_minute")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's keys alone, as a file gives them (errors as the `kith`
    /// command shows them, after the file's name).
    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<File>(text)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn upload_keys_are_read_and_checked() {
        let c = parse(
            "[listen]\nc2s = '127.0.0.1:1'\n[upload]\nmax_file_size = 5000\nquota = 9000\n\
             retention_days = 2\nslot_lifetime_secs = 60\nbase_url = 'https://chat.example:8443'\n",
        )
        .expect("valid");
        assert_eq!(c.upload.max_file_size, 5000);
        assert_eq!(c.upload.quota, 9000);
        assert_eq!(c.upload.retention, Duration::from_secs(2 * 86400));
        assert_eq!(c.upload.slot_lifetime, Duration::from_secs(60));
        assert_eq!(
            c.upload.base_url.as_deref(),
            Some("https://chat.example:8443")
        );
        let e =
            parse("[listen]\nc2s = '127.0.0.1:1'\n[upload]\nbase_url = 'http://x'\n").unwrap_err();
        assert!(e.starts_with("upload.base_url"), "{e}");
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[upload]\nmax_file_size = 0\n").unwrap_err();
        assert!(e.starts_with("upload.max_file_size"), "{e}");
    }

    /// Found by the `config` fuzz target: `retention_days * 86400` overflowed
    /// (a panic in debug builds, a wrapped retention in release builds).
    #[test]
    fn huge_times_are_refused_not_overflowed() {
        let e =
            parse("[listen]\nc2s = '127.0.0.1:1'\n[upload]\nretention_days = 18446744073709551\n")
                .unwrap_err();
        assert!(e.starts_with("upload.retention_days"), "{e}");
        for (section, key) in [
            ("limits", "auth_timeout_secs"),
            ("limits", "sm_ack_request_interval_secs"),
            ("archive", "prune_interval_secs"),
            ("push", "min_interval_secs"),
            ("ping", "idle_secs"),
            ("ping", "timeout_secs"),
            ("upload", "slot_lifetime_secs"),
            ("s2s", "idle_timeout_secs"),
            ("s2s", "connect_timeout_secs"),
        ] {
            let text = format!(
                "[listen]\nc2s = '127.0.0.1:1'\n[{section}]\n{key} = {}\n",
                i64::MAX
            );
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with(&format!("{section}.{key}")), "{e}");
            let text = format!("[listen]\nc2s = '127.0.0.1:1'\n[{section}]\n{key} = 86400\n");
            assert!(parse(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn stream_management_keys() {
        let c = parse(
            "[listen]\nc2s = '127.0.0.1:1'\n[limits]\nsm_resume_timeout_secs = 60\nsm_max_unacked = 50\nsm_ack_request_every = 2\nsm_ack_request_interval_secs = 5\nsm_max_hibernated = 1\n",
        )
        .expect("parses");
        assert_eq!(c.limits.sm_resume_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.sm_max_unacked, 50);
        assert_eq!(c.limits.sm_ack_request_every, 2);
        assert_eq!(c.limits.sm_ack_request_interval, Duration::from_secs(5));
        assert_eq!(c.limits.sm_max_hibernated, 1);
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[limits]\nsm_max_unacked = 0\n").unwrap_err();
        assert!(e.starts_with("limits.sm_max_unacked"), "{e}");
        let d = parse("[listen]\nc2s = '127.0.0.1:1'\n").expect("defaults parse");
        assert_eq!(d.limits.sm_resume_timeout, Duration::from_secs(300));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("domain = 'x.org'\n[listen]\nc2s = '127.0.0.1:1'\nc2z = '1'\n").unwrap_err();
        assert!(e.contains("c2z"), "{e}");
        let e = parse("domian = 'x.org'\n").unwrap_err();
        assert!(e.contains("domian"), "{e}");
    }

    #[test]
    fn bad_values_say_which_key() {
        let e = parse("[listen]\nc2s = 'nope'\n").unwrap_err();
        assert!(e.starts_with("listen.c2s"), "{e}");
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[limits]\nstanza_size = 10\n").unwrap_err();
        assert!(e.starts_with("limits.stanza_size"), "{e}");
        let e = parse("domain = 'a@b'\n[listen]\nc2s = '127.0.0.1:1'\n").unwrap_err();
        assert!(e.starts_with("domain"), "{e}");
        let e =
            parse("[listen]\nc2s = '127.0.0.1:1'\n[auth]\nscram_iterations = 10\n").unwrap_err();
        assert!(e.starts_with("auth.scram_iterations"), "{e}");
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[auth]\nfast_token_days = 0\n").unwrap_err();
        assert!(e.starts_with("auth.fast_token_days"), "{e}");
        let c = parse("[listen]\nc2s = '127.0.0.1:1'\n[auth]\nfast_token_days = 7\n").unwrap();
        assert_eq!(c.fast_token_lifetime.as_secs(), 7 * 86_400);
    }

    #[test]
    fn pep_limits_are_read_and_checked() {
        let c = parse("[listen]\nc2s = '127.0.0.1:1'\n[limits]\npep_nodes = 7\npep_items = 9\npep_item_size = 4096\n")
            .expect("ok");
        assert_eq!(
            (
                c.limits.pep_nodes,
                c.limits.pep_items,
                c.limits.pep_item_size
            ),
            (7, 9, 4096)
        );
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[limits]\npep_items = 0\n").unwrap_err();
        assert!(e.starts_with("limits.pep_items"), "{e}");
    }

    #[test]
    fn components_push_and_ping() {
        let c = parse(
            "[listen]\nc2s = '127.0.0.1:1'\ncomponent = '127.0.0.1:5347'\n\
             [components]\n'Push.localhost' = 's3cret'\n[push]\ninclude_body = true\n\
             [ping]\nidle_secs = 5\ntimeout_secs = 2\n",
        )
        .expect("ok");
        assert_eq!(
            c.listen.component,
            Some("127.0.0.1:5347".parse().expect("addr"))
        );
        assert_eq!(
            c.components.get("push.localhost").map(|s| s.0.as_str()),
            Some("s3cret")
        );
        assert!(c.push.include_body);
        assert_eq!(c.ping.idle, Duration::from_secs(5));
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\ncomponent = '0.0.0.0:5347'\n").unwrap_err();
        assert!(e.starts_with("listen.component"), "{e}");
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[components]\n'a@b' = 'x'\n").unwrap_err();
        assert!(e.starts_with("components."), "{e}");
        let e =
            parse("[listen]\nc2s = '127.0.0.1:1'\n[components]\n'p.localhost' = ''\n").unwrap_err();
        assert!(e.contains("secret is empty"), "{e}");
    }

    #[test]
    fn s2s_section_is_validated() {
        let c = parse(
            "domain = 'kith.test'\n[listen]\nc2s = '127.0.0.1:1'\n[s2s]\nallow = ['Friend.test']\n[s2s.hosts]\n'friend.test' = '127.0.0.2:5269'\n",
        )
        .expect("ok");
        assert_eq!(c.s2s.allow, vec!["friend.test".to_string()]);
        assert_eq!(c.s2s.stanza_size, 512 * 1024);
        assert!(c.s2s.hosts.contains_key("friend.test"));
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[s2s.hosts]\n'a.test' = 'x'\n").unwrap_err();
        assert!(e.starts_with("s2s.hosts"), "{e}");
        let e = parse("[listen]\nc2s = '127.0.0.1:1'\n[s2s]\ndeny = ['a@b']\n").unwrap_err();
        assert!(e.starts_with("s2s.deny"), "{e}");
        assert_eq!((c.s2s.stanzas_per_second, c.s2s.stanza_burst), (50, 500));
        assert_eq!(
            (c.s2s.subscriptions_per_minute, c.s2s.subscription_burst),
            (2, 20)
        );
        assert_eq!(c.limits.pending_subscriptions, 50);
        let c = parse(
            "[listen]\nc2s = '127.0.0.1:1'\n[limits]\npending_subscriptions = 10\n[s2s]\n\
             stanzas_per_second = 0\nstanza_burst = 7\nsubscriptions_per_minute = 6\n\
             subscription_burst = 3\n",
        )
        .expect("valid");
        assert_eq!(c.limits.pending_subscriptions, 10);
        assert_eq!(
            (
                c.s2s.stanzas_per_second,
                c.s2s.stanza_burst,
                c.s2s.subscriptions_per_minute,
                c.s2s.subscription_burst
            ),
            (0, 7, 6, 3)
        );
        for (bad, key) in [
            ("[s2s]\nstanza_burst = 0\n", "s2s.stanza_burst"),
            ("[s2s]\nsubscription_burst = 0\n", "s2s.subscription_burst"),
            (
                "[s2s]\nsubscriptions_per_minute = 100001\n",
                "s2s.subscriptions_per_minute",
            ),
            (
                "[limits]\npending_subscriptions = 0\n",
                "limits.pending_subscriptions",
            ),
        ] {
            let e = parse(&format!("[listen]\nc2s = '127.0.0.1:1'\n{bad}")).unwrap_err();
            assert!(e.starts_with(key), "{e}");
        }
    }

    #[test]
    fn history_settings() {
        let base = "[listen]\nc2s = '127.0.0.1:1'\n";
        let c = parse(base).expect("ok");
        assert_eq!(
            c.archive.retention_days, 0,
            "history is kept forever by default"
        );
        let c = parse(&format!(
            "{base}[archive]\nretention_days = 30\nprune_interval_secs = 60\n"
        ))
        .expect("ok");
        assert_eq!(c.archive.retention_days, 30);
        assert_eq!(c.archive.prune_interval, Duration::from_secs(60));
        let e = parse(&format!("{base}[archive]\nprune_interval_secs = 0\n")).unwrap_err();
        assert!(e.starts_with("archive.prune_interval_secs"), "{e}");
        let e = parse(&format!("{base}[archive]\nretention = 3\n")).unwrap_err();
        assert!(e.contains("retention"), "{e}");
    }

    #[test]
    fn missing_listeners_are_off() {
        let c = parse("[listen]\nc2s_tls = '127.0.0.1:0'\n").expect("ok");
        assert!(c.listen.c2s.is_none() && c.listen.s2s.is_none());
        assert!(parse("domain = 'x.org'\n").is_err());
    }
}
