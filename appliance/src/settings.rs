//! Settings the box changes itself (the wizard, the admin pages, the
//! certificate manager, backups, `kith settings set`): a typed API over the
//! box's own layer, `DATA_DIR/settings.toml` (see `config.rs` for the layers).
//!
//! A change is validated with every other layer before it is accepted, and
//! written atomically (temporary file, fsync, rename, fsync the folder): a
//! power cut leaves the old settings or the new, never a broken file. A key
//! the admin's configuration file sets is locked: changing it is refused with
//! the file's name.

use std::path::{Path, PathBuf};

use crate::config::{key_path, Layers};

/// A setting's new value: a TOML value (integer, string, boolean, array, table).
pub type Value = toml::Value;

/// Set in the environment of a test only: the process kills itself
/// (SIGKILL) once the new settings are durable in the temporary file and
/// before the rename (the moment a power cut is most likely to tear a naive
/// write).
pub const CRASH_BEFORE_RENAME: &str = "KITH_TEST_CRASH_BEFORE_RENAME";

/// What a change does to a running box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// In force within seconds: a running `kith serve` reads the file again
    /// (new connections get the new limits, open ones keep theirs).
    Live,
    /// The XMPP service and the web pod start again inside the running
    /// process (a new domain, listeners, TLS files): open connections close
    /// and clients reconnect. If they cannot start with the new settings (a
    /// port in use), they start again with the previous ones.
    Reconnect,
    /// In force when kith starts again.
    NeedsRestart,
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Effect::Live => "in force now",
            Effect::Reconnect => "in force now; connected devices reconnect",
            Effect::NeedsRestart => "needs a restart of kith to take effect",
        })
    }
}

/// What a change to `key` does to a running box.
pub fn effect(key: &str) -> Effect {
    let section = key_path(key)[0];
    if matches!(key, "domain" | "muc.domain" | "muc.enabled")
        || matches!(section, "listen" | "tls" | "acme")
    {
        Effect::Reconnect
    } else if kith_server::config_file::applies_live(key) {
        Effect::Live
    } else {
        Effect::NeedsRestart
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The admin's configuration file sets the key.
    Locked { key: String, file: PathBuf },
    /// The value (or the key) is not valid; the message names the key.
    Invalid(String),
    /// The domain cannot change while accounts exist under the old one.
    AccountsExist { domain: String, accounts: usize },
    /// The settings file could not be written (nothing changed).
    Write(String),
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::Locked { key, file } => write!(
                f,
                "{key} is locked: it is set in {}, which wins over the settings the box writes; change it there",
                file.display()
            ),
            SetError::Invalid(e) | SetError::Write(e) => f.write_str(e),
            SetError::AccountsExist { domain, accounts } => write!(
                f,
                "domain: {accounts} account(s) exist under {domain}; the domain can only change before the first account"
            ),
        }
    }
}

impl std::error::Error for SetError {}

/// Where `key` is set now, for the pages: locked by the admin's file, or not.
pub fn locked(layers: &Layers, key: &str) -> Option<PathBuf> {
    layers.locked_by(key).map(PathBuf::from)
}

/// Set `key` (`limits.offline_max`, `domain`) to `value` in the box's
/// settings. The domain has its own operation: [`change_domain`].
pub fn set(layers: &mut Layers, key: &str, value: Value) -> Result<Effect, SetError> {
    only_through_change_domain(key)?;
    let table = with_key(layers, key, Some(value))?;
    write(layers, table)?;
    Ok(effect(key))
}

/// Remove `key` from the box's settings: the layers below apply again.
pub fn unset(layers: &mut Layers, key: &str) -> Result<Effect, SetError> {
    only_through_change_domain(key)?;
    let table = with_key(layers, key, None)?;
    write(layers, table)?;
    Ok(effect(key))
}

/// The domain changes only through [`change_domain`], which checks accounts.
fn only_through_change_domain(key: &str) -> Result<(), SetError> {
    if key == "domain" {
        return Err(SetError::Invalid(
            "domain: change it with the domain operation (kith settings set domain NAME), which checks accounts".into(),
        ));
    }
    Ok(())
}

/// Change the domain: refused while accounts exist under the old one.
/// Settings the box stored from the old domain follow (`muc.domain`
/// `groups.OLD`, `upload.base_url` `https://OLD…`); the self-signed
/// certificate is made again for the new names when the server starts.
pub async fn change_domain(layers: &mut Layers, domain: &str) -> Result<Effect, SetError> {
    let domain = domain.trim().to_ascii_lowercase();
    let current = layers.config().map_err(SetError::Invalid)?.server;
    let old = current.domain.clone();
    let mut table = with_key(layers, "domain", Some(Value::String(domain.clone())))?;
    if old == domain {
        return Ok(Effect::Live);
    }
    let accounts = kith_server::Accounts::open(&current)
        .await
        .map_err(|e| SetError::Write(e.to_string()))?;
    let listed = accounts.list().await;
    accounts.close().await;
    let listed = listed.map_err(|e| SetError::Write(e.to_string()))?;
    if !listed.is_empty() {
        return Err(SetError::AccountsExist {
            domain: old,
            accounts: listed.len(),
        });
    }
    follow_domain(&mut table, &old, &domain);
    write(layers, table)?;
    Ok(Effect::Reconnect)
}

/// Rewrite the box's own settings that named the old domain.
fn follow_domain(table: &mut toml::Table, old: &str, new: &str) {
    if let Some(toml::Value::Table(muc)) = table.get_mut("muc") {
        if let Some(toml::Value::String(d)) = muc.get_mut("domain") {
            if let Some(prefix) = d.strip_suffix(old).filter(|p| p.ends_with('.')) {
                *d = format!("{prefix}{new}");
            }
        }
    }
    if let Some(toml::Value::Table(upload)) = table.get_mut("upload") {
        if let Some(toml::Value::String(u)) = upload.get_mut("base_url") {
            let host = u.trim_start_matches("https://");
            let rest = host
                .strip_prefix(old)
                .filter(|r| r.is_empty() || r.starts_with(':'));
            if let Some(rest) = rest {
                *u = format!("https://{new}{rest}");
            }
        }
    }
}

/// The box's table with `key` set to `value` (or removed), after the checks
/// every change shares: a settable key, not locked.
fn with_key(layers: &Layers, key: &str, value: Option<Value>) -> Result<toml::Table, SetError> {
    let path = key_path(key);
    if key.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(SetError::Invalid(format!(
            "'{key}' is not a setting's name"
        )));
    }
    if path[0] == "data_dir" {
        return Err(SetError::Invalid(
            "data_dir: where the box keeps its data (and these settings); only a configuration file can set it".into(),
        ));
    }
    if let Some(file) = layers.locked_by(key) {
        return Err(SetError::Locked {
            key: key.to_string(),
            file: file.to_path_buf(),
        });
    }
    let mut table = layers.box_table();
    // `[listen]` and `[tls]` are set as a whole: start from what is in force.
    if matches!(path[0], "listen" | "tls") && !table.contains_key(path[0]) {
        if let Some(whole) = layers.get(path[0]) {
            table.insert(path[0].to_string(), whole);
        }
    }
    let mut at = &mut table;
    for p in &path[..path.len() - 1] {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(toml::Table::new()));
        at = match entry {
            Value::Table(t) => t,
            _ => return Err(SetError::Invalid(format!("{key}: {p} is not a table"))),
        };
    }
    let last = path[path.len() - 1];
    match value {
        Some(v) => {
            at.insert(last.to_string(), v);
        }
        None => {
            at.remove(last);
        }
    }
    prune_empty(&mut table);
    Ok(table)
}

fn prune_empty(table: &mut toml::Table) {
    table.retain(|_, v| match v {
        Value::Table(t) => {
            prune_empty(t);
            !t.is_empty()
        }
        _ => true,
    });
}

/// Validate `table` as the box's layer with every other layer, then write it.
fn write(layers: &mut Layers, table: toml::Table) -> Result<(), SetError> {
    let mut candidate = layers.clone();
    candidate.set_box_table(table.clone());
    // The layer alone: names and types, as a file would be checked at start.
    let text = toml::to_string(&table).map_err(|e| SetError::Invalid(e.to_string()))?;
    crate::config::read_layer(
        &text,
        crate::config::Origin::Box(layers.settings_path().into()),
    )
    .map_err(SetError::Invalid)?;
    // With every other layer: bounds, and what keys mean together. (The
    // error names the key; the file does not hold the new value yet.)
    let box_prefix = format!("{}: ", layers.settings_path().display());
    candidate.config().map_err(|e| {
        SetError::Invalid(e.strip_prefix(&box_prefix).map(str::to_string).unwrap_or(e))
    })?;
    let path = layers.settings_path().to_path_buf();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        kith_server::files::private_dir(dir)
            .map_err(|e| SetError::Write(format!("cannot create {}: {e}", dir.display())))?;
    }
    let data = format!(
        "# Settings this box wrote (setup wizard, admin pages, `kith settings set`).\n\
         # Kith rewrites this file whole; a key in the configuration file wins over it.\n\n{text}"
    );
    kith_server::files::write_atomic_with(&path, data.as_bytes(), |tmp| {
        same_owner_as_folder(tmp)?;
        if std::env::var_os(CRASH_BEFORE_RENAME).is_some() {
            // As a power cut would: no rename, no clean-up, no core file.
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            std::process::abort();
        }
        Ok(())
    })
    .map_err(|e| SetError::Write(format!("cannot write {}: {e}", path.display())))?;
    *layers = candidate;
    // The settings are in force; the good copy only helps a later start.
    if let Err(e) = write_box_file(&good_copy_path(&path), data.as_bytes()) {
        tracing::warn!("cannot keep a good copy of {}: {e}", path.display());
    }
    Ok(())
}

/// Beside `DATA_DIR/settings.toml`: the last settings file that loaded
/// whole, which [`recover`] puts back if the file is ever damaged.
pub const GOOD_COPY: &str = ".settings.toml.good";
/// Where [`recover`] keeps a damaged settings file for a human to look at.
pub const DAMAGED_COPY: &str = "settings.toml.damaged";

fn good_copy_path(settings: &Path) -> PathBuf {
    settings.with_file_name(GOOD_COPY)
}

/// Write one of the box's files atomically, owned like its folder.
fn write_box_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    kith_server::files::write_atomic_with(path, data, same_owner_as_folder)
}

/// At start: if the box's settings file is damaged (unreadable, empty, not
/// TOML, not settings), set it aside as [`DAMAGED_COPY`] and put back the
/// last good copy, if there is one. Returns the log line saying what was
/// done, or `None` when the file is whole (or absent). The admin's file is
/// never touched here: a damaged one stops `kith` with an error naming it.
pub fn recover(layers: &Layers) -> Option<String> {
    let reason = layers.damaged()?;
    let path = layers.settings_path();
    let damaged = path.with_file_name(DAMAGED_COPY);
    let kept = match std::fs::rename(path, &damaged) {
        Ok(()) => format!("the damaged file is kept as {}", damaged.display()),
        Err(e) => format!(
            "cannot keep the damaged file as {} ({e})",
            damaged.display()
        ),
    };
    let good = good_copy_path(path);
    let whole = std::fs::read_to_string(&good)
        .ok()
        .filter(|text| !text.is_empty())
        .filter(|text| {
            crate::config::read_layer(text, crate::config::Origin::Box(path.to_path_buf())).is_ok()
        });
    Some(match whole {
        Some(text) => match write_box_file(path, text.as_bytes()) {
            Ok(()) => format!(
                "the box's settings file was damaged ({reason}); restored its last good copy ({}); {kept}",
                good.display()
            ),
            Err(e) => format!(
                "the box's settings file was damaged ({reason}) and its last good copy cannot be put back ({e}); starting without the box's settings; {kept}"
            ),
        },
        None => format!(
            "the box's settings file was damaged ({reason}) and there is no good copy; starting without the box's settings (the setup wizard and admin pages write them again); {kept}"
        ),
    })
}

/// After a start whose box settings loaded whole: make the good copy match
/// them (a box from before good copies existed, or a file edited by hand).
pub fn keep_good_copy(layers: &Layers) {
    if !layers.has_box_layer() || layers.ignored().is_some() {
        return;
    }
    let path = layers.settings_path();
    let Ok(now) = std::fs::read(path) else {
        return;
    };
    let good = good_copy_path(path);
    if std::fs::read(&good).is_ok_and(|g| g == now) {
        return;
    }
    if let Err(e) = write_box_file(&good, &now) {
        tracing::warn!("cannot keep a good copy of {}: {e}", path.display());
    }
}

/// Give `file` the owner of its folder (the data directory): `kith settings
/// set` run as root on the box must not leave a file the service (user
/// `kith`) cannot read. Nothing to do when they already match.
fn same_owner_as_folder(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let (d, f) = (std::fs::metadata(dir)?, std::fs::metadata(file)?);
    if (d.uid(), d.gid()) == (f.uid(), f.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(file, Some(d.uid()), Some(d.gid()))
}

/// Read a value as typed on a command line: TOML (`5`, `true`, `"x"`,
/// `["a", "b"]`), else a plain string (`family.example`).
pub fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{read_layer, Origin};

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kith-settings-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn box_with(dir: &std::path::Path, admin: &str) -> Layers {
        let shipped = read_layer(
            "domain = 'kith.local'\n[listen]\nc2s = '127.0.0.1:1'\n",
            Origin::Shipped(None),
        )
        .expect("valid");
        let admin = read_layer(admin, Origin::Admin(dir.join("kith.toml"))).expect("valid");
        Layers::from_layers(vec![shipped, admin], dir.join("settings.toml"))
    }

    #[test]
    fn a_written_setting_is_read_back_and_validated() {
        let d = scratch("write");
        let mut l = box_with(&d, "");
        assert_eq!(
            set(&mut l, "limits.offline_max", Value::Integer(5)),
            Ok(Effect::Live)
        );
        assert_eq!(l.config().expect("valid").server.limits.offline_max, 5);
        let text = std::fs::read_to_string(d.join("settings.toml")).expect("written");
        assert!(text.contains("offline_max = 5"), "{text}");
        let e = set(&mut l, "limits.session_queue", Value::Integer(0)).unwrap_err();
        assert!(
            matches!(&e, SetError::Invalid(m) if m.contains("limits.session_queue")),
            "{e}"
        );
        let e = set(&mut l, "limits.nope", Value::Integer(1)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(
            set(&mut l, "listen.c2s", Value::String("127.0.0.1:2".into())),
            Ok(Effect::Reconnect)
        );
        assert_eq!(
            set(&mut l, "s2s.queue", Value::Integer(10)),
            Ok(Effect::NeedsRestart)
        );
        let text = std::fs::read_to_string(d.join("settings.toml")).expect("written");
        assert!(
            text.contains("offline_max = 5"),
            "the earlier setting stays: {text}"
        );
        assert_eq!(unset(&mut l, "limits.offline_max"), Ok(Effect::Live));
        assert_eq!(l.config().expect("valid").server.limits.offline_max, 1000);
        assert!(set(&mut l, "data_dir", Value::String("/tmp".into())).is_err());
        assert!(
            unset(&mut l, "domain").is_err(),
            "only change_domain changes it"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_locked_setting_is_refused_with_the_file_named() {
        let d = scratch("locked");
        let mut l = box_with(&d, "[limits]\noffline_max = 9\n");
        let e = set(&mut l, "limits.offline_max", Value::Integer(5)).unwrap_err();
        assert!(
            e.to_string()
                .contains(&*d.join("kith.toml").to_string_lossy()),
            "{e}"
        );
        assert_eq!(locked(&l, "limits.offline_max"), Some(d.join("kith.toml")));
        assert_eq!(locked(&l, "limits.session_queue"), None);
        assert!(!d.join("settings.toml").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_settings_file_is_set_aside_and_its_good_copy_put_back() {
        let d = scratch("damaged");
        std::fs::create_dir_all(&d).expect("made");
        let defaults = d.join("defaults.toml");
        std::fs::write(
            &defaults,
            format!(
                "domain = 'kith.local'\ndata_dir = '{}'\n[listen]\nc2s = '127.0.0.1:1'\n",
                d.display()
            ),
        )
        .expect("defaults");
        let sources = crate::config::Sources {
            defaults: Some(defaults),
            admin: None,
        };
        let load = || Layers::load(&sources).expect("loads");
        let mut l = load();
        assert_eq!(recover(&l), None, "no file, nothing to do");
        set(&mut l, "limits.offline_max", Value::Integer(7)).expect("set");
        let settings = d.join("settings.toml");
        let whole = std::fs::read(&settings).expect("written");
        assert_eq!(std::fs::read(d.join(GOOD_COPY)).expect("good copy"), whole);
        assert_eq!(recover(&load()), None, "a whole file is left alone");

        let damages: [&[u8]; 4] = [b"", b"[limits\noffline_", b"limits = 5\n", b"\xff\xfe"];
        for damage in damages {
            std::fs::write(&settings, damage).expect("damaged");
            let note = recover(&load()).expect("recovered");
            assert!(note.contains("restored its last good copy"), "{note}");
            assert!(note.contains(DAMAGED_COPY), "{note}");
            assert_eq!(std::fs::read(&settings).expect("restored"), whole);
            assert_eq!(std::fs::read(d.join(DAMAGED_COPY)).expect("kept"), damage);
            assert_eq!(load().config().expect("valid").server.limits.offline_max, 7);
        }

        // Without a good copy: set aside, and the box starts on the other layers.
        std::fs::remove_file(d.join(GOOD_COPY)).expect("removed");
        std::fs::write(&settings, b"garbage [").expect("damaged");
        let note = recover(&load()).expect("noted");
        assert!(note.contains("no good copy"), "{note}");
        assert!(!settings.exists());
        let l = load();
        assert_eq!(l.damaged(), None);
        assert_eq!(l.config().expect("valid").server.limits.offline_max, 1000);
        // A file edited by hand that loads whole becomes the good copy.
        std::fs::write(&settings, "[limits]\noffline_max = 3\n").expect("by hand");
        keep_good_copy(&load());
        assert_eq!(
            std::fs::read_to_string(d.join(GOOD_COPY)).expect("good copy"),
            "[limits]\noffline_max = 3\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn values_from_a_command_line() {
        assert_eq!(parse_value("5"), Value::Integer(5));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(
            parse_value("family.example"),
            Value::String("family.example".into())
        );
        assert_eq!(parse_value("'x y'"), Value::String("x y".into()));
    }

    #[test]
    fn stored_settings_follow_the_domain() {
        let mut t: toml::Table =
            "[muc]\ndomain = 'groups.kith.local'\n[upload]\nbase_url = 'https://kith.local:8443'\n"
                .parse()
                .expect("toml");
        follow_domain(&mut t, "kith.local", "family.example");
        assert_eq!(t["muc"]["domain"].as_str(), Some("groups.family.example"));
        assert_eq!(
            t["upload"]["base_url"].as_str(),
            Some("https://family.example:8443")
        );
    }
}
