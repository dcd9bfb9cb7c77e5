//! Configuration in layers, lowest first:
//!
//! 1. the built-in defaults (the `Default`s of `kith_server::config`);
//! 2. the shipped defaults: the image's file (`--defaults`, `KITH_DEFAULTS`),
//!    or on a laptop without any file the embedded [`DEFAULT`];
//! 3. the settings the box writes itself (wizard, admin pages, `kith settings
//!    set`): `DATA_DIR/settings.toml`, see `settings.rs`;
//! 4. the admin's configuration file (`--config`, `KITH_CONFIG`): it wins, and
//!    every key it sets is *locked* (the box cannot change it).
//!
//! Each crate owns its keys: the server's are `kith_server::config_file::File`
//! (their TOML shape and bounds). Here the layers are read, each checked alone
//! (an unknown key or a wrong type names the key and the line of its file),
//! merged key by key and validated once; an error names the file that set
//! the key.

use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// One layer's keys, each read and checked by the crate that owns it: the
/// XMPP server's (`domain`, `[listen]`, `[limits]` …), the web pod's `[web]`
/// and the certificate manager's `[acme]`.
#[derive(Debug, Default)]
pub struct File {
    pub server: kith_server::config_file::File,
    pub web: kith_web::config::WebFile,
    pub acme: kith_provisioning::AcmeFile,
}

/// Every part's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: kith_server::Config,
    pub web: kith_web::HttpLimits,
    pub acme: kith_provisioning::AcmeConfig,
}

impl File {
    /// Validate every section over its crate's defaults.
    pub fn into_config(self) -> Result<Config, String> {
        Ok(Config {
            server: self.server.into_config()?,
            web: self.web.into_limits()?,
            acme: self.acme.into_config()?,
        })
    }
}

/// Every top-level key, for the message about an unknown one.
fn all_keys() -> &'static [&'static str] {
    static ALL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut keys = kith_server::config_file::File::KEYS.to_vec();
        keys.push(kith_web::config::SECTION);
        keys.push(kith_provisioning::config::SECTION);
        keys
    })
}

/// Each top-level key goes to the crate that owns it; a key nobody owns is
/// an error naming it.
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
                    if file.server.read_key(&key, &mut map)? {
                        continue;
                    }
                    if key == kith_web::config::SECTION {
                        file.web = map.next_value()?;
                        continue;
                    }
                    if key == kith_provisioning::config::SECTION {
                        file.acme = map.next_value()?;
                        continue;
                    }
                    return Err(serde::de::Error::unknown_field(&key, all_keys()));
                }
                Ok(file)
            }
        }
        d.deserialize_map(Keys)
    }
}

/// The embedded shipped defaults: runs on a laptop without root and without a file.
pub const DEFAULT: &str = r#"
domain = "localhost"
data_dir = "./kith-data"

[listen]
c2s = "127.0.0.1:5222"
c2s_tls = "127.0.0.1:5223"
s2s = "127.0.0.1:5269"
http = "127.0.0.1:5280"
https = "127.0.0.1:5281"
"#;

/// The name of the box's own settings file in the data directory.
pub const SETTINGS_FILE: &str = "settings.toml";

/// Tables a layer sets as a whole: a layer with `[listen]` names every
/// listener (a missing key turns that one off), `[tls]` names both files.
const WHOLE: [&str; 2] = ["listen", "tls"];

/// Where a layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The image's shipped defaults file, or `None`: the embedded [`DEFAULT`].
    Shipped(Option<PathBuf>),
    /// Settings the box wrote (`DATA_DIR/settings.toml`).
    Box(PathBuf),
    /// The admin's configuration file.
    Admin(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Shipped(None) => f.write_str("the built-in default configuration"),
            Origin::Shipped(Some(p)) | Origin::Box(p) | Origin::Admin(p) => {
                write!(f, "{}", p.display())
            }
        }
    }
}

/// One layer: its origin and its keys.
#[derive(Debug, Clone)]
pub struct Layer {
    pub origin: Origin,
    pub table: toml::Table,
}

/// The files to read (from the command line or the environment).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Shipped defaults (`--defaults`).
    pub defaults: Option<PathBuf>,
    /// The admin's file (`--config`).
    pub admin: Option<PathBuf>,
}

/// Every layer, lowest first, and where the box's settings file is.
#[derive(Debug, Clone)]
pub struct Layers {
    layers: Vec<Layer>,
    settings_path: PathBuf,
    ignored: Option<String>,
    damaged: Option<String>,
}

/// Read and check one layer's text: TOML, and the keys' names and types.
pub fn read_layer(text: &str, origin: Origin) -> Result<Layer, String> {
    let shape = toml::from_str::<File>(text).map(|_| ());
    let table = match shape {
        Ok(()) => text.parse::<toml::Table>().map_err(toml_error),
        Err(e) => Err(toml_error(e)),
    };
    table
        .map(|table| Layer {
            origin: origin.clone(),
            table,
        })
        .map_err(|e| format!("{origin}: {e}"))
}

/// toml's message names the unknown or mistyped key and its line; keep it on one line.
fn toml_error(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))
}

impl Layers {
    /// Read the shipped defaults, the admin's file and the box's settings.
    pub fn load(sources: &Sources) -> Result<Layers, String> {
        let mut layers = Vec::new();
        match &sources.defaults {
            Some(p) => layers.push(read_layer(
                &read_file(p)?,
                Origin::Shipped(Some(p.clone())),
            )?),
            // The laptop default, only when nothing else is named: an admin's
            // file alone must say every listener it wants.
            None if sources.admin.is_none() => {
                layers.push(read_layer(DEFAULT, Origin::Shipped(None))?)
            }
            None => {}
        }
        let admin = match &sources.admin {
            // A human wrote it: never set aside or rewritten, only refused
            // with what to do.
            Some(p) => Some(
                read_file(p)
                    .and_then(|text| read_layer(&text, Origin::Admin(p.clone())))
                    .map_err(|e| {
                        format!("{e} (kith never changes this file: fix it, or move it away, and start kith again)")
                    })?,
            ),
            None => None,
        };
        // The data directory comes from the files, never from the box's own settings.
        let data_dir = layers
            .iter()
            .chain(admin.as_ref())
            .filter_map(|l| l.table.get("data_dir").and_then(|v| v.as_str()))
            .next_back()
            .unwrap_or("./kith-data");
        let settings_path = Path::new(data_dir).join(SETTINGS_FILE);
        // What the box wrote never keeps it from starting: a settings file it
        // cannot read or use is left out, and the reason kept for the log.
        // A file that does not even parse (or is empty: the box always
        // writes a header) is damaged: `settings::recover` restores it.
        let mut ignored = None;
        let mut damaged = None;
        match std::fs::read_to_string(&settings_path) {
            Ok(text) if text.is_empty() => {
                damaged = Some(format!("{}: the file is empty", settings_path.display()))
            }
            Ok(text) => match read_layer(&text, Origin::Box(settings_path.clone())) {
                Ok(layer) if layer.table.contains_key("data_dir") => {
                    ignored = Some(format!(
                        "{}: data_dir: only a configuration file can set it",
                        settings_path.display()
                    ));
                }
                Ok(layer) => layers.push(layer),
                Err(e) => damaged = Some(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => damaged = Some(format!("cannot read {}: {e}", settings_path.display())),
        }
        layers.extend(admin);
        Ok(Layers {
            layers,
            settings_path,
            ignored: ignored.or_else(|| damaged.clone()),
            damaged,
        })
    }

    /// Why the box's settings file was left out, if it was.
    pub fn ignored(&self) -> Option<&str> {
        self.ignored.as_deref()
    }

    /// Why the box's settings file is damaged (unreadable, empty, not TOML
    /// or not settings at all), if it is.
    pub fn damaged(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// Whether the box's own settings file was read into these layers.
    pub fn has_box_layer(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l.origin, Origin::Box(_)))
    }

    /// Layers made from texts (tests).
    #[cfg(test)]
    pub fn from_layers(layers: Vec<Layer>, settings_path: PathBuf) -> Layers {
        Layers {
            layers,
            settings_path,
            ignored: None,
            damaged: None,
        }
    }

    /// The box's settings file (`DATA_DIR/settings.toml`).
    pub fn settings_path(&self) -> &Path {
        &self.settings_path
    }

    /// The box's own layer, if it has written one.
    pub fn box_table(&self) -> toml::Table {
        self.layers
            .iter()
            .find(|l| matches!(l.origin, Origin::Box(_)))
            .map(|l| l.table.clone())
            .unwrap_or_default()
    }

    /// Replace (or add) the box's own layer, below the admin's file.
    pub fn set_box_table(&mut self, table: toml::Table) {
        let origin = Origin::Box(self.settings_path.clone());
        self.layers.retain(|l| !matches!(l.origin, Origin::Box(_)));
        let at = self
            .layers
            .iter()
            .position(|l| matches!(l.origin, Origin::Admin(_)))
            .unwrap_or(self.layers.len());
        self.layers.insert(at, Layer { origin, table });
    }

    /// These layers with `sections` left out of the box's own, or `None`
    /// when the box's settings have none of them.
    pub fn without_box_sections(&self, sections: &[&str]) -> Option<Layers> {
        let mut table = self.box_table();
        let before = table.len();
        table.retain(|k, _| !sections.contains(&k));
        if table.len() == before {
            return None;
        }
        let mut layers = self.clone();
        layers.set_box_table(table);
        Some(layers)
    }

    /// All layers merged, key by key (whole tables for `[listen]` and `[tls]`).
    pub fn merged(&self) -> toml::Table {
        let mut out = toml::Table::new();
        for l in &self.layers {
            merge(&mut out, &l.table, true);
        }
        out
    }

    /// The validated configuration. An error names the file that set the key.
    pub fn config(&self) -> Result<Config, String> {
        let merged = self.merged();
        let file: File = toml::Value::Table(merged).try_into().map_err(toml_error)?;
        file.into_config().map_err(|e| {
            let key = e
                .split([':', ' '])
                .next()
                .unwrap_or_default()
                .trim_matches(['[', ']']);
            let origin = self
                .where_set(key)
                .or_else(|| self.layers.last().map(|l| &l.origin));
            match origin {
                Some(o) => format!("{o}: {e}"),
                None => e,
            }
        })
    }

    /// The origin an error of [`Layers::config`] names, if any.
    pub fn where_set_error(&self, e: &str) -> Option<&Origin> {
        self.layers
            .iter()
            .map(|l| &l.origin)
            .find(|o| e.starts_with(&format!("{o}: ")))
    }

    /// The highest layer that sets `key` (`limits.offline_max`), or a whole
    /// table holding it.
    pub fn where_set(&self, key: &str) -> Option<&Origin> {
        self.where_set_path(&key_path(key))
    }

    fn where_set_path(&self, path: &[&str]) -> Option<&Origin> {
        self.layers
            .iter()
            .rev()
            .find(|l| sets(&l.table, path))
            .map(|l| &l.origin)
    }

    /// Every key some layer sets, with its value in force, the layer it
    /// comes from and whether the admin's file locks it (for the pages and
    /// `kith settings list`).
    pub fn entries(&self) -> Vec<Entry> {
        fn leaves(
            prefix: &mut Vec<String>,
            t: &toml::Table,
            out: &mut Vec<(Vec<String>, toml::Value)>,
        ) {
            for (k, v) in t {
                prefix.push(k.clone());
                match v {
                    toml::Value::Table(sub) if !sub.is_empty() => leaves(prefix, sub, out),
                    _ => out.push((prefix.clone(), v.clone())),
                }
                prefix.pop();
            }
        }
        let mut found = Vec::new();
        leaves(&mut Vec::new(), &self.merged(), &mut found);
        found
            .into_iter()
            .filter_map(|(path, value)| {
                let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                let origin = self.where_set_path(&parts)?.clone();
                let key = parts
                    .iter()
                    .map(|p| {
                        if p.contains(['.', ' ', '"']) || p.is_empty() {
                            format!("{p:?}")
                        } else {
                            p.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                Some(Entry {
                    locked: matches!(origin, Origin::Admin(_)),
                    key,
                    value,
                    origin,
                })
            })
            .collect()
    }

    /// The admin's file, when it sets `key`: the box cannot change it.
    pub fn locked_by(&self, key: &str) -> Option<&Path> {
        match self.where_set(key) {
            Some(Origin::Admin(p)) => Some(p),
            _ => None,
        }
    }

    /// The value of `key` in the merged layers (`None`: the built-in default).
    pub fn get(&self, key: &str) -> Option<toml::Value> {
        let merged = self.merged();
        lookup(&merged, &key_path(key)).cloned()
    }
}

/// Split `limits.offline_max` into its parts.
pub fn key_path(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = table.get(*first)?;
    for p in rest {
        v = v.as_table()?.get(*p)?;
    }
    Some(v)
}

/// Whether `table` sets the key at `path`, or the whole table (`listen`) holding it.
fn sets(table: &toml::Table, path: &[&str]) -> bool {
    let first = path.first().copied().unwrap_or_default();
    lookup(table, path).is_some() || (WHOLE.contains(&first) && table.contains_key(first))
}

/// One key some layer sets: see [`Layers::entries`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Dotted (`limits.offline_max`; a part with a dot is quoted).
    pub key: String,
    pub value: toml::Value,
    pub origin: Origin,
    /// Set in the admin's file: the box cannot change it.
    pub locked: bool,
}

/// Lay `upper` over `lower`: tables merge key by key, except the whole ones
/// at the top; anything else is replaced.
fn merge(lower: &mut toml::Table, upper: &toml::Table, top: bool) {
    for (k, v) in upper {
        match (lower.get_mut(k), v) {
            (Some(toml::Value::Table(l)), toml::Value::Table(u))
                if !(top && WHOLE.contains(&k.as_str())) =>
            {
                merge(l, u, false)
            }
            _ => {
                lower.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The dotted keys whose values differ between two merged tables.
pub fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    walk(&format!("{prefix}.{k}"), x.get(k), y.get(k), out);
                }
            }
            (a, b) if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<_> = old.keys().chain(new.keys()).collect();
    for k in keys {
        walk(k, old.get(k), new.get(k), &mut out);
    }
    out
}

/// Read every layer and validate them together. Settings the box wrote
/// never keep it from starting (an update may have narrowed a bound): when
/// they are what is wrong, they are left out and the error comes back as the
/// third value, to be logged loudly.
pub fn load(sources: &Sources) -> Result<(Layers, Config, Option<String>), String> {
    let mut layers = Layers::load(sources)?;
    match layers.config() {
        Ok(config) => {
            let ignored = layers.ignored().map(str::to_string);
            Ok((layers, config, ignored))
        }
        Err(e) if matches!(layers.where_set_error(&e), Some(Origin::Box(_))) => {
            layers.set_box_table(toml::Table::new());
            let config = layers.config()?;
            Ok((layers, config, Some(e)))
        }
        Err(e) => Err(e),
    }
}

/// Parse and validate one file's text over the built-in defaults (tests,
/// the fuzz target).
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse(text: &str) -> Result<kith_server::Config, String> {
    let file: File = toml::from_str(text).map_err(toml_error)?;
    file.into_config().map(|c| c.server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_listens_on_loopback_high_ports() {
        let c = parse(DEFAULT).expect("default parses");
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.listen.c2s, Some("127.0.0.1:5222".parse().expect("addr")));
        assert_eq!(
            c.listen.https,
            Some("127.0.0.1:5281".parse().expect("addr"))
        );
        assert_eq!(c.limits.stanza_size, 256 * 1024);
        assert!(c.tls.is_none());
    }

    fn layer(text: &str, origin: Origin) -> Layer {
        read_layer(text, origin).expect("valid layer")
    }

    #[test]
    fn layers_merge_key_by_key_and_the_admin_file_wins() {
        let shipped = layer(
            "domain = 'kith.local'\n[listen]\nc2s = '127.0.0.1:1'\nhttp = '127.0.0.1:2'\n[limits]\noffline_max = 7\n",
            Origin::Shipped(Some("/usr/share/kith/defaults.toml".into())),
        );
        let boxed = layer(
            "domain = 'family.example'\n[limits]\nsession_queue = 9\n",
            Origin::Box("/var/lib/kith/settings.toml".into()),
        );
        let admin = layer(
            "[limits]\nsession_queue = 11\n",
            Origin::Admin("/etc/kith/kith.toml".into()),
        );
        let l = Layers::from_layers(vec![shipped, boxed, admin], "/x".into());
        let c = l.config().expect("valid").server;
        assert_eq!(c.domain, "family.example");
        assert_eq!(c.limits.offline_max, 7);
        assert_eq!(c.limits.session_queue, 11);
        assert!(c.listen.http.is_some());
        assert_eq!(
            l.locked_by("limits.session_queue"),
            Some(Path::new("/etc/kith/kith.toml"))
        );
        assert_eq!(l.locked_by("domain"), None);
        let entries = l.entries();
        let entry = |k: &str| entries.iter().find(|e| e.key == k).cloned();
        assert_eq!(
            entry("limits.session_queue").map(|e| (e.value, e.locked)),
            Some((toml::Value::Integer(11), true))
        );
        assert_eq!(
            entry("domain").map(|e| (e.origin, e.locked)),
            Some((Origin::Box("/var/lib/kith/settings.toml".into()), false))
        );
        assert!(entry("listen.http").is_some() && entry("limits.offline_max").is_some());
        assert_eq!(
            l.where_set("domain"),
            Some(&Origin::Box("/var/lib/kith/settings.toml".into()))
        );
        // [listen] is set as a whole: the admin's one names every listener.
        let admin = layer(
            "[listen]\nc2s_tls = '127.0.0.1:3'\n",
            Origin::Admin("/etc/kith/kith.toml".into()),
        );
        let mut l = l;
        l.layers.pop();
        l.layers.push(admin);
        let c = l.config().expect("valid").server;
        assert!(c.listen.http.is_none() && c.listen.c2s.is_none());
        assert!(l.locked_by("listen.http").is_some());
    }

    #[test]
    fn errors_name_the_file_that_set_the_key() {
        let e = read_layer(
            "[limits]\nstanza_sise = 5\n",
            Origin::Admin("a.toml".into()),
        )
        .unwrap_err();
        assert!(
            e.starts_with("a.toml: ") && e.contains("stanza_sise") && e.contains("line 2"),
            "{e}"
        );
        let l = Layers::from_layers(
            vec![
                layer("[listen]\nc2s = '127.0.0.1:1'\n", Origin::Shipped(None)),
                layer(
                    "[limits]\nsession_queue = 0\n",
                    Origin::Box("s.toml".into()),
                ),
                layer("domain = 'x.example'\n", Origin::Admin("a.toml".into())),
            ],
            "s.toml".into(),
        );
        let e = l.config().unwrap_err();
        assert!(e.starts_with("s.toml: limits.session_queue"), "{e}");
    }

    #[test]
    fn each_crate_reads_its_own_section() {
        let admin = || Origin::Admin("a.toml".into());
        let l = Layers::from_layers(
            vec![layer(
                "[listen]\nc2s = '127.0.0.1:1'\n[web]\nheader_bytes = 9000\n",
                admin(),
            )],
            "s.toml".into(),
        );
        assert_eq!(l.config().expect("valid").web.header_bytes, 9000);
        let e = read_layer("[web]\nheader_bites = 1\n", admin()).unwrap_err();
        assert!(e.contains("header_bites") && e.contains("line 2"), "{e}");
        let e = read_layer("domain = 'a.example'\nwbe = 1\n", admin()).unwrap_err();
        assert!(
            e.contains("wbe") && e.contains("`web`") && e.contains("`muc`"),
            "{e}"
        );
        let l = Layers::from_layers(
            vec![layer(
                "[listen]\nc2s = '127.0.0.1:1'\n[web]\nheader_bytes = 1\n",
                admin(),
            )],
            "s.toml".into(),
        );
        let e = l.config().unwrap_err();
        assert!(e.starts_with("a.toml: web.header_bytes"), "{e}");
    }
}
