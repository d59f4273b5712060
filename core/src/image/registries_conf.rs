//! `registries.conf`, the containers tools' registry configuration (containers-registries.conf(5)),
//! read by pulls so that a machine set up for podman pulls the same way with cagette: mirrors
//! (`[[registry.mirror]]`, tried in order before the registry), `insecure` registries and mirrors
//! (plain HTTP allowed), `blocked` registries (refused), and `location` (a registry served from
//! another host). The v1 format's `[registries.insecure]` and `[registries.block]` lists too.
//!
//! What is not supported is refused where it matters: a rule whose prefix, location or mirror
//! has a namespace (`docker.io/library` → `mirror.example/hub`) makes a pull that it matches
//! fail with an error naming the file, rather than be ignored.

use super::ImageError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Which `registries.conf` a pull reads.
///
/// ```
/// let opts = cagette::PullOptions { registries_conf: cagette::RegistriesConf::Off, ..Default::default() };
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RegistriesConf {
    /// As podman: `$CONTAINERS_REGISTRIES_CONF` when set; else, when not root,
    /// `~/.config/containers/registries.conf` if it exists; else `/etc/containers/registries.conf`
    /// — each with the drop-ins of its `.d` directory (`*.conf`, in name order). None of them: no
    /// rules.
    #[default]
    Default,
    /// This file (and its `.d` drop-ins).
    File(PathBuf),
    /// None.
    Off,
}

/// One `[[registry]]` rule, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// What it applies to: `host[:port]`, `*.domain`, or (unsupported) `host/namespace`.
    pub prefix: String,
    /// Where the registry is really served (default: the prefix).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    /// Mirrors in order, with their own `insecure`.
    pub mirrors: Vec<(String, bool)>,
    /// The file it came from.
    pub file: PathBuf,
    /// Why cagette cannot honour it, if it cannot.
    pub unsupported: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct File {
    registry: Vec<Entry>,
    /// The v1 format.
    registries: Option<V1>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Entry {
    prefix: Option<String>,
    location: Option<String>,
    insecure: bool,
    blocked: bool,
    mirror: Vec<Mirror>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Mirror {
    location: String,
    insecure: bool,
    #[serde(rename = "pull-from-mirror")]
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1 {
    insecure: V1List,
    block: V1List,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1List {
    registries: Vec<String>,
}

fn bad(file: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(format!("registries.conf {}: {why}", file.display()))
}

impl RegistriesConf {
    /// The files to read, in order (later rules for the same prefix win).
    fn files(&self) -> Vec<PathBuf> {
        let main = match self {
            RegistriesConf::Off => return Vec::new(),
            RegistriesConf::File(p) => p.clone(),
            RegistriesConf::Default => {
                let user = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/containers/registries.conf")).filter(|p| p.exists());
                match std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
                    Some(p) => PathBuf::from(p),
                    None => match user.filter(|_| nix::unistd::geteuid().as_raw() != 0) {
                        Some(u) => u,
                        None => PathBuf::from("/etc/containers/registries.conf"),
                    },
                }
            }
        };
        let mut out = Vec::new();
        if main.exists() || matches!(self, RegistriesConf::File(_)) {
            out.push(main.clone());
        }
        let mut dropins: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(format!("{}.d", main.display())))
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect())
            .unwrap_or_default();
        dropins.sort();
        out.extend(dropins);
        out
    }

    /// Reads the rules.
    pub(crate) fn load(&self) -> Result<Vec<Rule>, ImageError> {
        let mut rules: Vec<Rule> = Vec::new();
        for file in self.files() {
            let bytes = crate::fs::hostfile::read_host_file(&file, 1 << 20).map_err(|e| bad(&file, e))?;
            let text = String::from_utf8(bytes).map_err(|_| bad(&file, "not UTF-8"))?;
            let parsed: File = toml::from_str(&text).map_err(|e| bad(&file, e.message()))?;
            fn add(rules: &mut Vec<Rule>, r: Rule) {
                rules.retain(|o| o.prefix != r.prefix);
                rules.push(r);
            }
            for e in parsed.registry {
                let prefix = match (e.prefix, &e.location) {
                    (Some(p), _) => p,
                    (None, Some(l)) => l.clone(),
                    (None, None) => return Err(bad(&file, "a [[registry]] needs a prefix or a location")),
                };
                let location = e.location.unwrap_or_else(|| prefix.clone());
                let mut unsupported = None;
                let namespaced = |s: &str| s.contains('/');
                if namespaced(&prefix) || namespaced(&location) || e.mirror.iter().any(|m| namespaced(&m.location)) {
                    unsupported = Some("prefixes, locations and mirrors with a namespace (host/path) are not supported; use host[:port] rules".to_string());
                }
                if prefix.starts_with("*.") && location != prefix {
                    unsupported = Some("a wildcard prefix cannot have a location".into());
                }
                if e.mirror.iter().any(|m| m.pull_from_mirror.as_deref().is_some_and(|p| p != "all")) {
                    unsupported = Some("pull-from-mirror other than \"all\" is not supported".into());
                }
                if e.mirror.iter().any(|m| m.location.is_empty()) {
                    return Err(bad(&file, format!("a mirror of {prefix:?} has no location")));
                }
                let mirrors = e.mirror.into_iter().map(|m| (m.location, m.insecure)).collect();
                add(&mut rules, Rule { prefix, location, insecure: e.insecure, blocked: e.blocked, mirrors, file: file.clone(), unsupported });
            }
            if let Some(v1) = parsed.registries {
                for (list, insecure, blocked) in [(v1.insecure.registries, true, false), (v1.block.registries, false, true)] {
                    for r in list {
                        let mut rule = rules.iter().find(|o| o.prefix == r).cloned().unwrap_or(Rule { prefix: r.clone(), location: r, insecure: false, blocked: false, mirrors: Vec::new(), file: file.clone(), unsupported: None });
                        rule.insecure |= insecure;
                        rule.blocked |= blocked;
                        add(&mut rules, rule);
                    }
                }
            }
        }
        Ok(rules)
    }
}

/// The rule for an image (`registry`, `repository`), as the containers tools pick it: the
/// longest prefix that matches (`host`, `host/namespace…` at a component boundary, `*.domain`).
pub(crate) fn rule_for<'a>(rules: &'a [Rule], registry: &str, repository: &str) -> Option<&'a Rule> {
    let full = format!("{registry}/{repository}");
    rules
        .iter()
        .filter(|r| {
            if let Some(domain) = r.prefix.strip_prefix("*.") {
                let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
                return host.ends_with(&format!(".{domain}"));
            }
            r.prefix == registry || full == r.prefix || full.starts_with(&format!("{}/", r.prefix)) || full.starts_with(&format!("{}:", r.prefix)) || full.starts_with(&format!("{}@", r.prefix))
        })
        .max_by_key(|r| if r.prefix.starts_with("*.") { 0 } else { r.prefix.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Rule>, ImageError> {
        let dir = std::env::temp_dir().join(format!("cagette-regconf-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("registries.conf");
        std::fs::write(&f, text).unwrap();
        let r = RegistriesConf::File(f).load();
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn rules_mirrors_insecure_blocked_and_matching() {
        let rules = load(
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000"
insecure = true
[[registry.mirror]]
location = "mirror2.example"

[[registry]]
location = "bad.example"
blocked = true

[[registry]]
prefix = "old.example"
location = "new.example:444"
insecure = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry]]
prefix = "docker.io/library"
location = "hub.example/library"

[registries.block]
registries = ["v1-blocked.example"]
"#,
        )
        .unwrap();
        let hub = rule_for(&rules, "docker.io", "team/app").unwrap();
        assert_eq!(hub.mirrors, vec![("mirror.example:5000".to_string(), true), ("mirror2.example".to_string(), false)]);
        assert!(rule_for(&rules, "bad.example", "x").unwrap().blocked);
        assert!(rule_for(&rules, "v1-blocked.example", "x").unwrap().blocked);
        let old = rule_for(&rules, "old.example", "a/b").unwrap();
        assert_eq!((old.location.as_str(), old.insecure), ("new.example:444", true));
        assert!(rule_for(&rules, "reg.corp.example:5000", "x").unwrap().insecure);
        assert!(rule_for(&rules, "corp.example", "x").is_none());
        // The most specific prefix: docker.io/library beats docker.io, and is refused.
        assert!(rule_for(&rules, "docker.io", "library/alpine").unwrap().unsupported.is_some());
        assert!(rule_for(&rules, "docker.io", "libraryx/alpine").unwrap().unsupported.is_none());
        assert!(rule_for(&rules, "other.example", "x").is_none());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, want) in [("[[registry]\nprefix = 1", "registries.conf"), ("[[registry]]\ninsecure = true", "needs a prefix or a location"), ("[[registry]]\nprefix = \"a\"\n[[registry.mirror]]\ninsecure = true", "has no location"), ("[[registry]]\nprefix = 5", "invalid type")] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = RegistriesConf::File("/nonexistent/registries.conf".into()).load().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/registries.conf"), "{e}");
        assert_eq!(RegistriesConf::Off.load().unwrap(), Vec::new());
    }
}
