//! `cagette build`: images from a Dockerfile, each step a sandbox (issue 18).
//!
//! The Dockerfile is parsed by the `parse-dockerfile` crate (continuations, the escape
//! directive, exec and shell forms, flags, heredocs); what it means is here:
//!
//! - every stage starts from an image of the store (or `scratch`, or an earlier stage);
//! - `RUN` runs in a sandbox on the stage's layers as read-only overlay lowers with a fresh
//!   upper directory, which becomes the step's layer ([`write_layer`](super::write_layer));
//! - `COPY`/`ADD` of local files write the layer straight from the context's files (ADD of a
//!   local tar archive extracts it); nothing named by the Dockerfile is followed out of the
//!   context, and `.dockerignore` applies;
//! - the other instructions change the image config only;
//! - a step that makes a layer is cached under a key made of its parent image's config digest,
//!   the instruction (after variable expansion), the build arguments it sees and, for
//!   `COPY`/`ADD`, a hash of the files it reads: a rebuild with nothing changed runs no step;
//! - tar entries are sorted, mtimes clamped to `SOURCE_DATE_EPOCH` (or 0), owners numeric and
//!   gzip settings fixed, so the same Dockerfile and context give the same image digest.
//!
//! Each step's result is an image record of the store named `build-cache:<key>`, hidden from
//! [`list`](super::ImageStore::list) and dropped by [`gc`](super::ImageStore::gc); the final
//! image is recorded under its tag with its manifest, config and layer blobs kept (so it can be
//! exported or pushed). A base image must have been pulled or imported with its blobs kept.

use super::layer::{open_beneath, open_nofollow, write_planned, FileSource, Planned, PlannedEntry};
use super::{go_arch, hex, name_file, parse_json, run_config, ImageError, ImageInfo, ImageStore, LayerSrc, Parsed, Src};
use crate::sandbox::spec::{Network, SandboxSpec, Stdio};
use crate::{Sandbox, Size, Verdict};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use parse_dockerfile::{Command, Instruction, Source};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// What a build is asked to do (see [`ImageStore::build`]).
///
/// ```
/// let mut o = cagette::BuildOptions::default();
/// o.tag = Some("app:1".into());
/// o.build_args.insert("V".into(), "2".into());
/// assert!(o.network_host);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The Dockerfile; default `CONTEXT/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// The name the image is recorded under (`name:tag`); without one the image is known by its
    /// digest only.
    pub tag: Option<String>,
    /// `--build-arg K=V`: values for the Dockerfile's `ARG`s.
    pub build_args: BTreeMap<String, String>,
    /// Build up to this stage (its name or index) instead of the last.
    pub target: Option<String>,
    /// `RUN` steps on the host's network (like Docker's default), else with none.
    pub network_host: bool,
    /// Run every step even when the cache has it.
    pub no_cache: bool,
    /// The mtime every file of a new layer is clamped to, and the config's `created`: default
    /// `SOURCE_DATE_EPOCH`, else 0.
    pub epoch: Option<u64>,
    /// A memory limit for each `RUN` step.
    pub memory: Option<Size>,
    /// A CPU limit for each `RUN` step.
    pub cpus: Option<f64>,
    /// A process limit for each `RUN` step.
    pub pids: Option<u64>,
    /// A wall-clock limit for each `RUN` step.
    pub step_timeout: Option<Duration>,
    /// With the `registry` feature: how a FROM image the store lacks (or holds without its blobs)
    /// is pulled; `None` (the default, as for an image a sandbox runs) never pulls: a missing
    /// base is then an error. The CLI pulls unless `--pull never`.
    #[cfg(feature = "registry")]
    pub pull: Option<super::PullOptions>,
    /// Set to true (from any thread) to cancel the build: a running `RUN` step is killed with its
    /// whole sandbox, nothing is tagged, and the build returns [`ImageError::Cancelled`].
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// `RUN` steps write to the caller's stderr as they go (the CLI); otherwise their
    /// output is captured and shown in the error of a step that fails.
    pub inherit_output: bool,
}

impl BuildOptions {
    /// Checks the limits of the `RUN` steps' sandboxes (memory, cpus, pids, step timeout) as a
    /// sandbox's own are checked, before anything is built: a bad one is otherwise found at the
    /// first `RUN` step that is not cached, or never.
    ///
    /// ```
    /// let mut o = cagette::BuildOptions::default();
    /// o.pids = Some(0);
    /// assert!(o.check_limits().unwrap_err().contains("pids"));
    /// ```
    pub fn check_limits(&self) -> Result<(), String> {
        let limits = SandboxSpec { argv: vec!["true".into()], memory: self.memory, cpus: self.cpus, pids: self.pids, timeout: self.step_timeout, ..SandboxSpec::default() };
        limits.validate().map_err(|e| e.message)
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dockerfile: None,
            tag: None,
            build_args: BTreeMap::new(),
            target: None,
            network_host: true,
            no_cache: false,
            epoch: None,
            memory: None,
            cpus: None,
            pids: None,
            step_timeout: None,
            #[cfg(feature = "registry")]
            pull: None,
            cancel: None,
            inherit_output: false,
        }
    }
}

/// What is wrong with a binding's build options ([`BuildOptions::from_binding_json`]).
///
/// ```
/// let e = cagette::BuildOptions::from_binding_json(r#"{"network": "bridge"}"#, std::time::Duration::from_secs(1)).unwrap_err();
/// assert!(matches!(&e, cagette::OptionsError::Value(m) if m.contains("\"host\" or \"none\"")), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// An unknown option or a value of the wrong type (Python's `TypeError`).
    Type(String),
    /// A value out of its range (Python's `ValueError`).
    Value(String),
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionsError::Type(m) | OptionsError::Value(m) => f.write_str(m),
        }
    }
}

impl BuildOptions {
    /// The options of a binding's `build` call, as JSON with snake_case or camelCase keys:
    /// `tag`, `dockerfile`, `build_args` (`{name: value}`), `target`, `network` (`"host"`, the
    /// default, or `"none"`), `no_cache`, `memory` (bytes or `"256M"`), `cpus`, `pids`,
    /// `step_timeout` (in `time_unit`s: seconds for Python, milliseconds for Node) and, with
    /// the `registry` feature, `pull`: `true`, or an object of
    /// [`PullOptions::from_binding_json`](super::PullOptions::from_binding_json), to pull a
    /// FROM image the store lacks (absent, `null` or `false`: never pull). The limits are
    /// checked as a sandbox's are.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = cagette::BuildOptions::from_binding_json(r#"{"tag": "app:1", "stepTimeout": 1500, "network": "none"}"#, Duration::from_millis(1)).unwrap();
    /// assert_eq!((o.tag.as_deref(), o.step_timeout, o.network_host), (Some("app:1"), Some(Duration::from_millis(1500)), false));
    /// assert!(matches!(cagette::BuildOptions::from_binding_json(r#"{"no_cahce": true}"#, Duration::from_secs(1)), Err(cagette::OptionsError::Type(_))));
    /// assert!(matches!(cagette::BuildOptions::from_binding_json(r#"{"pids": 0}"#, Duration::from_secs(1)), Err(cagette::OptionsError::Value(_))));
    /// ```
    pub fn from_binding_json(json: &str, time_unit: Duration) -> Result<BuildOptions, OptionsError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            tag: Option<String>,
            dockerfile: Option<PathBuf>,
            #[serde(default, alias = "buildArgs")]
            build_args: BTreeMap<String, String>,
            target: Option<String>,
            network: Option<String>,
            #[serde(default, alias = "noCache")]
            no_cache: bool,
            memory: Option<Size>,
            cpus: Option<f64>,
            pids: Option<u64>,
            #[serde(alias = "stepTimeout")]
            step_timeout: Option<f64>,
            #[cfg(feature = "registry")]
            pull: Option<Value>,
        }
        let unit = if time_unit == Duration::from_millis(1) { "milliseconds" } else { "seconds" };
        let w: Wire = serde_json::from_str(json).map_err(|e| {
            // Without serde's " at line L column C": meaningless for keyword arguments.
            let m = e.to_string();
            let m = format!("build options: {}", m.rfind(" at line ").map_or(m.as_str(), |i| &m[..i]));
            if m.contains("invalid type") || m.contains("unknown field") { OptionsError::Type(m) } else { OptionsError::Value(m) }
        })?;
        let mut o = BuildOptions::default();
        o.network_host = match w.network.as_deref() {
            None | Some("host") => true,
            Some("none") => false,
            Some(n) => return Err(OptionsError::Value(format!("network {n:?}: a build's RUN steps have network \"host\" or \"none\""))),
        };
        if let Some(t) = w.step_timeout {
            let secs = t * time_unit.as_secs_f64();
            // Positive, and a duration a sandbox accepts.
            if !(t.is_finite() && t > 0.0 && secs <= crate::MAX_DURATION.as_secs_f64()) {
                let name = if time_unit == Duration::from_millis(1) { "stepTimeout" } else { "step_timeout" };
                return Err(OptionsError::Value(format!("{name} {t}: expected a positive number of {unit}")));
            }
            o.step_timeout = Some(Duration::from_secs_f64(secs));
        }
        #[cfg(feature = "registry")]
        {
            o.pull = match w.pull {
                None | Some(Value::Null) | Some(Value::Bool(false)) => None,
                Some(Value::Bool(true)) => Some(super::PullOptions::default()),
                Some(v @ Value::Object(_)) => Some(super::PullOptions::from_binding_json(&v.to_string(), time_unit).map_err(OptionsError::Value)?),
                Some(v) => return Err(OptionsError::Type(format!("build options: pull: {v}: expected true, false or an object of pull options"))),
            };
        }
        (o.tag, o.dockerfile, o.build_args, o.target, o.no_cache, o.memory, o.cpus, o.pids) = (w.tag, w.dockerfile, w.build_args, w.target, w.no_cache, w.memory, w.cpus, w.pids);
        // Memory, cpus and pids are each RUN step's sandbox's: checked as a sandbox's are.
        o.check_limits().map_err(OptionsError::Value)?;
        Ok(o)
    }
}

/// What a build reports as it goes (the `progress` callback of [`ImageStore::build`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildEvent {
    /// A step starts: `n` of `total`, the Dockerfile's line and the instruction.
    Step {
        /// 1-based.
        n: usize,
        /// Steps of the stages built.
        total: usize,
        /// The line in the Dockerfile (1-based).
        line: usize,
        /// The instruction as written (first line).
        text: String,
    },
    /// The step's result came from the cache.
    Cached,
    /// A FROM image is being pulled (the store lacked it, or its blobs).
    Pulling(String),
    /// The image is recorded: its manifest digest. (Too late to cancel: what the callback
    /// returns here is not looked at.)
    Done(String),
}

/// Why a build failed. Nothing half-built is tagged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Dockerfile could not be parsed.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The Dockerfile.
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An instruction that cannot be carried out as written.
    #[error("{file}:{line}: {message}")]
    Instruction {
        /// The Dockerfile.
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong, and how to fix it where there is a fix.
        message: String,
    },
    /// A `RUN` step did not exit 0.
    #[error("{file}:{line}: RUN {command:?} {verdict}{}", if output.is_empty() { String::new() } else { format!("; its output:\n{output}") })]
    Step {
        /// The Dockerfile.
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// The step's command.
        command: String,
        /// How it ended (`exited with status 2`, ...).
        verdict: String,
        /// Its exit status, when it exited.
        status: Option<i32>,
        /// What it wrote (the last 8 KiB), when captured.
        output: String,
    },
    /// A `RUN` step's sandbox could not be set up.
    #[error("{file}:{line}: the step's sandbox: {source}")]
    Sandbox {
        /// The Dockerfile.
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// The sandbox's error.
        source: crate::Error,
    },
    /// The image store refused something.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A file of the build could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
}

impl BuildError {
    /// What the Python and Node bindings raise for this error: `reason` (parse, instruction,
    /// step, sandbox, image, io, cancelled or other), the message, and the file, line, column,
    /// command, verdict, exit status and output where the error has them. `words` rewrites the
    /// CLI's flag names in messages into the binding's own option names.
    ///
    /// ```
    /// let e = cagette::BuildError::Image(cagette::ImageError::Cancelled);
    /// assert_eq!(e.binding_payload(&|s| s.to_string())["reason"], "cancelled");
    /// ```
    pub fn binding_payload(&self, words: &dyn Fn(&str) -> String) -> Value {
        let f = |p: &Path| p.display().to_string();
        match self {
            BuildError::Parse { file, line, column, .. } => json!({"reason": "parse", "message": self.to_string(), "file": f(file), "line": line, "column": column}),
            BuildError::Instruction { file, line, message } => {
                let m = message.strip_prefix("--target ").map_or_else(|| message.clone(), |rest| format!("target {rest}"));
                json!({"reason": "instruction", "message": format!("{}:{line}: {}", f(file), words(&m)), "file": f(file), "line": line})
            }
            BuildError::Step { file, line, command, verdict, status, output } => {
                let (full, head) = (self.to_string(), format!("{}:{line}: RUN {command:?} {verdict}", f(file)));
                let message = full.strip_prefix(&head).map_or_else(|| full.clone(), |rest| format!("{}:{line}: RUN {command:?} {}{rest}", f(file), words(verdict)));
                json!({"reason": "step", "message": message, "file": f(file), "line": line, "command": command, "verdict": words(verdict), "exit_status": status, "output": output})
            }
            BuildError::Sandbox { file, line, .. } => json!({"reason": "sandbox", "message": self.to_string(), "file": f(file), "line": line}),
            BuildError::Image(ImageError::Cancelled) => json!({"reason": "cancelled", "message": "build cancelled"}),
            BuildError::Image(_) => json!({"reason": "image", "message": words(&self.to_string())}),
            BuildError::Io { .. } => json!({"reason": "io", "message": self.to_string()}),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

const CACHE_PREFIX: &str = "build-cache:";

/// Build arguments every RUN sees without declaring them (Docker's predefined ones).
const PROXY_ARGS: &[&str] = &["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// Whether a store record is a build step's (hidden from `list`).
pub(super) fn is_cache_name(name: &str) -> bool {
    name.starts_with(CACHE_PREFIX)
}

/// A layer as the manifest describes it.
#[derive(Clone, Debug)]
struct LayerDesc {
    media_type: String,
    digest: String,
    size: u64,
    diff_id: String,
}

/// An image being built: its whole config (JSON, so fields cagette does not model are kept)
/// and its layers.
#[derive(Clone, Debug)]
struct State {
    config: Value,
    layers: Vec<LayerDesc>,
    /// The store record holding exactly this state, if written.
    record: Option<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    fn scratch() -> State {
        // The default PATH, as Docker and buildah give a scratch image.
        State { config: json!({"architecture": go_arch(), "os": "linux", "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}), layers: Vec::new(), record: None, cmd_set: false }
    }

    /// The config's `config` object, to change: the state is no longer the record it was.
    fn cfg(&mut self) -> &mut serde_json::Map<String, Value> {
        self.record = None;
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        self.config["config"].as_object_mut().expect("made an object above")
    }

    fn get_str(&self, k: &str) -> Option<String> {
        self.config.get("config").and_then(|c| c.get(k)).and_then(Value::as_str).map(str::to_string)
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config.get("config").and_then(|c| c.get("Env")).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
        self.cfg().insert("Env".into(), json!(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()));
    }

    fn shell(&self) -> Vec<String> {
        self.config.get("config").and_then(|c| c.get("Shell")).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect::<Vec<_>>()).filter(|v| !v.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn config_bytes(&self) -> Vec<u8> {
        // serde_json's maps are sorted: the same config is the same bytes.
        serde_json::to_vec(&self.config).unwrap_or_default()
    }

    /// The chain key of this state: its config's digest (which holds its layers' diff_ids).
    fn key(&self) -> String {
        hex(&Sha256::digest(self.config_bytes()))
    }

    fn history(&mut self, created: &str, by: &str, empty: bool) {
        self.record = None;
        let mut h = json!({"created": created, "created_by": by, "comment": "cagette build"});
        if empty {
            h["empty_layer"] = json!(true);
        }
        match self.config.get_mut("history").and_then(Value::as_array_mut) {
            Some(a) => a.push(h),
            None => self.config["history"] = json!([h]),
        }
    }
}

/// RFC 3339 UTC of a Unix time (seconds).
fn rfc3339(t: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(i64::MAX), 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---- variables and words ----

/// Expands `$V`, `${V}`, `${V:-default}` and `${V:+alternative}` and removes quotes, like the
/// Dockerfile's own word processing: single quotes keep everything, double quotes keep spaces,
/// the escape character keeps the next one. Returns the words (split on unquoted blanks).
fn words(s: &str, vars: &dyn Fn(&str) -> Option<String>, escape: char) -> Result<Vec<String>, String> {
    words_at(s, vars, escape, 0)
}

/// `${A:-${B:-...}}` nested deeper than this is refused (each level is a recursion).
const MAX_NESTING: usize = 16;

fn words_at(s: &str, vars: &dyn Fn(&str) -> Option<String>, escape: char, depth: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut it = s.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = it.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, c) if c == escape => {
                match it.next() {
                    // Inside double quotes the escape keeps only $, ", and itself.
                    Some(n) if quote == Some('"') && !matches!(n, '$' | '"') && n != escape => {
                        cur.push(c);
                        cur.push(n);
                    }
                    Some(n) => cur.push(n),
                    None => cur.push(c),
                }
                has = true;
            }
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                has = true;
            }
            (Some('"'), '"') => quote = None,
            (_, '$') => {
                let v = expand_var(&mut it, vars, escape, depth)?;
                // An unquoted expansion to nothing makes no word (as in a shell).
                has |= !v.is_empty() || quote.is_some();
                cur.push_str(&v);
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            (_, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unmatched quote in {s:?}"));
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// A variable's name (letters, digits, `_`) from where the iterator is.
fn var_name(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut name = String::new();
    while let Some(&c) = it.peek().filter(|c| c.is_ascii_alphanumeric() || **c == '_') {
        name.push(c);
        it.next();
    }
    name
}

fn expand_var(it: &mut std::iter::Peekable<std::str::Chars<'_>>, vars: &dyn Fn(&str) -> Option<String>, escape: char, depth: usize) -> Result<String, String> {
    if it.peek() != Some(&'{') {
        let name = var_name(it);
        return Ok(if name.is_empty() { "$".into() } else { vars(&name).unwrap_or_default() });
    }
    it.next();
    let name = var_name(it);
    let value = vars(&name);
    match it.next() {
        Some('}') => Ok(value.unwrap_or_default()),
        Some(':') => {
            if depth >= MAX_NESTING {
                return Err(format!("${{{name}:...}}: substitutions nested more than {MAX_NESTING} deep"));
            }
            let op = it.next().ok_or("unfinished ${...}")?;
            let mut word = String::new();
            let mut level = 0;
            loop {
                match it.next() {
                    Some('}') if level == 0 => break,
                    Some('}') => {
                        level -= 1;
                        word.push('}');
                    }
                    Some('{') => {
                        level += 1;
                        word.push('{');
                    }
                    Some(c) => word.push(c),
                    None => return Err("unfinished ${...}".into()),
                }
            }
            let word = words_at(&word, vars, escape, depth + 1)?.join(" ");
            let set = value.as_deref().is_some_and(|v| !v.is_empty());
            match op {
                '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                '+' => Ok(if set { word } else { String::new() }),
                '?' if !set => Err(format!("{name}: {}", if word.is_empty() { "not set" } else { &word })),
                '?' => Ok(value.unwrap_or_default()),
                o => Err(format!("unsupported modifier ':{o}' in ${{{name}:...}}")),
            }
        }
        _ => Err(format!("bad substitution ${{{name}...")),
    }
}

/// `K=V K2="v 2"` pairs, or the old form `K V...` (ENV, LABEL, ARG).
fn pairs(s: &str, vars: &dyn Fn(&str) -> Option<String>, escape: char, old_form: bool) -> Result<Vec<(String, Option<String>)>, String> {
    let first = s.split_whitespace().next().unwrap_or("");
    if old_form && !first.contains('=') {
        let rest = s.trim_start()[first.len()..].trim();
        if rest.is_empty() {
            return Err(format!("{first} needs a value"));
        }
        return Ok(vec![(first.to_string(), Some(words(rest, vars, escape)?.join(" ")))]);
    }
    let mut out = Vec::new();
    for w in words(s, vars, escape)? {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), Some(v.to_string()))),
            None if !old_form => out.push((w, None)),
            _ => return Err(format!("{w:?}: expected KEY=VALUE")),
        }
    }
    Ok(out)
}

// ---- .dockerignore ----

/// One `.dockerignore` line: a glob (with `**`) and whether it re-includes (`!`).
struct IgnoreRule {
    parts: Vec<String>,
    include: bool,
}

fn ignore_rules(context: &Path) -> Result<Vec<IgnoreRule>, BuildError> {
    let text = match fs::read_to_string(context.join(".dockerignore")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read .dockerignore")(e)),
    };
    let mut rules = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (include, p) = match l.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, l),
        };
        let parts: Vec<String> = clean(p).split('/').filter(|c| !c.is_empty()).map(str::to_string).collect();
        if !parts.is_empty() {
            rules.push(IgnoreRule { parts, include });
        }
    }
    Ok(rules)
}

/// A path made relative and lexically clean (`./a/../b` → `b`); `..` past the start stays.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != "..") => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// One element of a glob component: a literal, `?`, `*`, or a `[...]` class.
enum GlobToken {
    Char(char),
    Any,
    Star,
    Class { ranges: Vec<(char, char)>, negate: bool },
}

fn glob_tokens(pat: &[char]) -> Vec<GlobToken> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            '*' => out.push(GlobToken::Star),
            '?' => out.push(GlobToken::Any),
            '\\' if i + 1 < pat.len() => {
                i += 1;
                out.push(GlobToken::Char(pat[i]));
            }
            '[' => match pat[i + 1..].iter().position(|&c| c == ']') {
                // An unclosed `[` is a literal.
                None => out.push(GlobToken::Char('[')),
                Some(len) => {
                    let mut class = &pat[i + 1..i + 1 + len];
                    let negate = class.first().is_some_and(|&f| f == '^' || f == '!');
                    if negate {
                        class = &class[1..];
                    }
                    let mut ranges = Vec::new();
                    let mut k = 0;
                    while k < class.len() {
                        if k + 2 < class.len() && class[k + 1] == '-' {
                            ranges.push((class[k], class[k + 2]));
                            k += 3;
                        } else {
                            ranges.push((class[k], class[k]));
                            k += 1;
                        }
                    }
                    out.push(GlobToken::Class { ranges, negate });
                    i += len + 1;
                }
            },
            c => out.push(GlobToken::Char(c)),
        }
        i += 1;
    }
    out
}

/// Whether `n_pat` pattern elements match `n_name` name elements, where `star(i)` says element
/// `i` matches any run of name elements and `one(i, j)` whether it matches name element `j`.
/// A table of the pattern's suffixes against the name's (no backtracking: time is the product
/// of the two lengths, whatever the pattern).
fn glob_match(n_pat: usize, n_name: usize, star: impl Fn(usize) -> bool, one: impl Fn(usize, usize) -> bool) -> bool {
    // row[j]: pattern[i..] matches name[j..]; computed from the last pattern element up.
    let mut next = vec![false; n_name + 1];
    next[n_name] = true;
    for i in (0..n_pat).rev() {
        let mut row = vec![false; n_name + 1];
        for j in (0..=n_name).rev() {
            row[j] = if star(i) { next[j] || (j < n_name && row[j + 1]) } else { j < n_name && one(i, j) && next[j + 1] };
        }
        next = row;
    }
    next[0]
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]`, `\` escapes.
fn glob_component(pat: &[char], name: &[char]) -> bool {
    let t = glob_tokens(pat);
    glob_match(t.len(), name.len(), |i| matches!(t[i], GlobToken::Star), |i, j| {
        let c = name[j];
        match &t[i] {
            GlobToken::Char(p) => *p == c,
            GlobToken::Any => true,
            GlobToken::Star => true,
            GlobToken::Class { ranges, negate } => ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negate,
        }
    })
}

/// Whether `pattern` components (with `**` for any number of them) match all of `path`.
fn glob_path(pattern: &[String], path: &[&str]) -> bool {
    let pat: Vec<Vec<char>> = pattern.iter().map(|p| p.chars().collect()).collect();
    let names: Vec<Vec<char>> = path.iter().map(|p| p.chars().collect()).collect();
    glob_match(pat.len(), names.len(), |i| pattern[i] == "**", |i, j| glob_component(&pat[i], &names[j]))
}

/// Whether `.dockerignore` leaves `rel` (a path in the context) out: the last rule that matches
/// it or one of its parents decides.
fn ignored(rules: &[IgnoreRule], rel: &str) -> bool {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut out = false;
    for r in rules {
        if (1..=comps.len()).any(|n| glob_path(&r.parts, &comps[..n])) {
            out = !r.include;
        }
    }
    out
}

// ---- the context ----

/// A file tree COPY reads: a build context (with `.dockerignore`) or a stage's unpacked root.
///
/// Every read goes through `root_fd`, opened once, and names a path below it with no symlink
/// on the way (`openat2`, `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): the paths come from
/// [`Tree::check_inside`], which resolves the links a named source may go through, and from
/// walks that never descend into a link. A directory swapped for a symlink while the build runs
/// is then an error, never a read outside the tree.
struct Tree {
    root: PathBuf,
    root_fd: std::sync::Arc<std::os::fd::OwnedFd>,
    rules: Vec<IgnoreRule>,
    what: &'static str,
}

/// What a failed look-up below a tree says: a symlink where none was is the tree changing.
fn why(rel: &str, e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => format!("{rel}: a symlink appeared on the way since it was looked up (the files changed during the build)"),
        _ => format!("{rel}: {e}"),
    }
}

/// One thing COPY puts into the layer: its path in the tree, where it goes.
struct Pick {
    src: String,
    dest: String,
}

impl Tree {
    fn new(root: PathBuf, rules: Vec<IgnoreRule>, what: &'static str) -> io::Result<Tree> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Tree { root, root_fd: std::sync::Arc::new(fd), rules, what })
    }

    /// `rel` (a path with no symlink on the way) opened below the root.
    fn open(&self, rel: &str, flags: rustix::fs::OFlags) -> Result<fs::File, String> {
        open_beneath(std::os::fd::AsFd::as_fd(&*self.root_fd), rel, flags).map(fs::File::from).map_err(|e| why(rel, e))
    }

    /// The metadata of `rel` itself (of a symlink, not of what it names).
    fn lstat(&self, rel: &str) -> Result<fs::Metadata, String> {
        self.open(rel, rustix::fs::OFlags::PATH)?.metadata().map_err(|e| why(rel, e))
    }

    /// The names in the directory `rel`.
    fn names(&self, rel: &str) -> Result<Vec<String>, String> {
        let d = self.open(rel, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&d).map_err(|e| why(rel, e.into()))? {
            let e = e.map_err(|e| why(rel, e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(String::from_utf8_lossy(n).into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The target of the symlink `rel`.
    fn read_link(&self, rel: &str) -> Result<PathBuf, String> {
        let f = self.open(rel, rustix::fs::OFlags::PATH)?;
        let t = rustix::fs::readlinkat(&f, "", Vec::new()).map_err(|e| why(rel, e.into()))?;
        Ok(PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(t.into_bytes())))
    }

    /// The regular file `rel`, opened for reading (never blocking on a FIFO).
    fn open_regular(&self, rel: &str) -> Result<fs::File, String> {
        let f = self.open(rel, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK)?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(format!("{rel}: not a regular file"));
        }
        Ok(f)
    }

    /// `rel` looked up without leaving the tree: every component opened below the root, a
    /// symlink on the way followed only if it stays inside.
    /// Returns the path with its symlinks resolved (relative to the root) and its metadata.
    fn check_inside(&self, rel: &str) -> Result<(String, fs::Metadata), String> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        match openat2(&*self.root_fd, if rel.is_empty() { "." } else { rel }, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS) {
            Ok(fd) => {
                let f = fs::File::from(fd);
                let md = f.metadata().map_err(|e| e.to_string())?;
                let real = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))).map_err(|e| e.to_string())?;
                let base = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*self.root_fd))).map_err(|e| e.to_string())?;
                let inside = real.strip_prefix(&base).map_err(|_| format!("{rel} leads outside the {}", self.what))?;
                Ok((inside.to_string_lossy().into_owned(), md))
            }
            Err(rustix::io::Errno::XDEV) => Err(format!("{rel} leads outside the {} (a symlink or ..): only files inside it can be copied", self.what)),
            Err(rustix::io::Errno::NOENT) => Err(format!("{rel}: no such file in the {}", self.what)),
            Err(e) => Err(format!("{rel}: {e}")),
        }
    }

    /// The tree's paths matching a COPY source (a path or a glob), cleaned, relative.
    fn matches(&self, src: &str) -> Result<Vec<String>, String> {
        let rel = clean(src);
        if rel == ".." || rel.starts_with("../") {
            return Err(format!("{src} is outside the {}: COPY reads only files inside it", self.what));
        }
        if !rel.contains(['*', '?', '[']) {
            return Ok(vec![self.check_inside(&rel)?.0]);
        }
        let pat: Vec<String> = rel.split('/').map(str::to_string).collect();
        let mut found = Vec::new();
        self.glob_walk(&pat, String::new(), &mut found)?;
        found.retain(|f| !ignored(&self.rules, f));
        if found.is_empty() {
            return Err(format!("{src}: no file in the {} matches", self.what));
        }
        found.sort();
        Ok(found)
    }

    fn glob_walk(&self, pat: &[String], at: String, found: &mut Vec<String>) -> Result<(), String> {
        let Some(first) = pat.first() else {
            found.push(at);
            return Ok(());
        };
        if !self.lstat(&at)?.is_dir() {
            return Ok(());
        }
        for n in self.names(&at)? {
            if glob_component(&first.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>()) {
                let next = if at.is_empty() { n } else { format!("{at}/{n}") };
                self.glob_walk(&pat[1..], next, found)?;
            }
        }
        Ok(())
    }

    /// Every file below `rel` (itself first), sorted, without the ignored ones, as
    /// (path in the tree, path relative to `rel`).
    fn walk(&self, rel: &str, out: &mut Vec<(String, String)>, below: String) -> Result<(), String> {
        if !rel.is_empty() && ignored(&self.rules, rel) {
            return Ok(());
        }
        out.push((rel.to_string(), below.clone()));
        if self.lstat(rel)?.is_dir() {
            for n in self.names(rel)? {
                let child = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                let b = if below.is_empty() { n } else { format!("{below}/{n}") };
                self.walk(&child, out, b)?;
            }
        }
        Ok(())
    }
}

/// How COPY writes what it picks: owner and mode.
#[derive(Clone, Copy, Default)]
struct CopyAttrs {
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
}

/// The picks' content hash (the cache key's part for COPY): paths, types, modes, sizes, link
/// targets and contents.
fn hash_picks(tree: &Tree, picks: &[Pick], epoch: u64) -> Result<String, String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for p in picks {
        let md = tree.lstat(&p.src)?;
        h.update(format!("{}\0{}\0{:o}\0{}\0{}\0", p.src, p.dest, md.mode(), md.len(), (md.mtime().max(0) as u64).min(epoch)).as_bytes());
        if md.file_type().is_symlink() {
            h.update(tree.read_link(&p.src)?.as_os_str().as_encoded_bytes());
        } else if md.is_file() {
            let mut f = tree.open_regular(&p.src)?;
            loop {
                let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", p.src))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\n");
    }
    Ok(hex(&h.finalize()))
}

/// Opens a regular file without following a link and without blocking on a FIFO.
fn open_regular(p: &Path) -> io::Result<fs::File> {
    let f = open_nofollow(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(f)
}

/// The layer entries of the picks: directories, files and symlinks of the tree under their new
/// paths, owners and modes; FIFOs, sockets and devices are refused.
fn plan_picks(tree: &Tree, picks: &[Pick], attrs: CopyAttrs, out: &mut Vec<PlannedEntry>) -> Result<(), String> {
    for p in picks {
        let md = tree.lstat(&p.src)?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Planned::Dir
        } else if ft.is_file() {
            Planned::File(FileSource::Beneath(tree.root_fd.clone(), p.src.clone()), md.len())
        } else if ft.is_symlink() {
            Planned::Symlink(tree.read_link(&p.src)?)
        } else {
            return Err(format!("{} is not a file, directory or symlink (a FIFO, socket or device): COPY refuses it", p.src));
        };
        let mode = if ft.is_symlink() { 0o777 } else { attrs.chmod.unwrap_or(md.mode() & 0o7777) };
        let (uid, gid) = attrs.chown.unwrap_or((0, 0));
        out.push(PlannedEntry { path: p.dest.trim_start_matches('/').to_string(), kind, mode, uid, gid, mtime: md.mtime().max(0) as u64 });
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, BuildError> {
        let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| "/var/tmp".into());
        let p = base.join(format!("cagette-build-{what}-{}-{}", std::process::id(), super::unique()));
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).create(&p).map_err(io_err(format!("create {}", p.display())))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = super::remove_tree(&self.0);
    }
}

// ---- the build ----

struct Builder<'a> {
    store: ImageStore,
    opts: &'a BuildOptions,
    file: PathBuf,
    text: &'a str,
    escape: char,
    epoch: u64,
    created: String,
    progress: &'a mut dyn FnMut(&BuildEvent) -> ControlFlow<()>,
    step: usize,
    total: usize,
    /// Each stage's result, by index (and name).
    stages: Vec<(Option<String>, State)>,
    global_args: BTreeMap<String, Option<String>>,
    /// Here-documents after a RUN's command, by the offset of its keyword (`blank_late_heredocs`).
    late_docs: BTreeMap<usize, String>,
}

impl Builder<'_> {
    fn line_of(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn bad(&self, pos: usize, message: impl Into<String>) -> BuildError {
        BuildError::Instruction { file: self.file.clone(), line: self.line_of(pos), message: message.into() }
    }

    /// Writes `state` to the store as the record `name` (config and manifest blobs kept; a new
    /// layer's blob at `new_blob` is verified and unpacked), returning the record.
    fn commit(&self, state: &State, name: &str, new_blob: Option<&Path>) -> Result<ImageInfo, BuildError> {
        let config_bytes = state.config_bytes();
        let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config_bytes)));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
            "layers": state.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_digest = format!("sha256:{}", hex(&Sha256::digest(&manifest_bytes)));
        let config: ImageConfiguration = parse_json(&config_bytes, "built config")?;
        let mut layers = Vec::new();
        for (i, l) in state.layers.iter().enumerate() {
            let last = i + 1 == state.layers.len();
            let src = match new_blob {
                Some(p) if last => Src::File(p.to_path_buf()),
                _ => Src::File(self.store.blob_path(&l.digest)?),
            };
            layers.push(LayerSrc { src, media_type: l.media_type.clone(), digest: Some(l.digest.clone()), size: l.size, diff_id: Some(l.diff_id.clone()) });
        }
        let parsed = Parsed { layers, manifest: Some(manifest_digest), config_digest: Some(config_digest), config: run_config(&config), manifest_bytes: Some(manifest_bytes), config_bytes: Some(config_bytes) };
        Ok(self.store.import_parsed(parsed, name, &name_file(name)?, &mut |_| ControlFlow::Continue(()))?)
    }

    /// A cached step's state: the record exists and its layers and blobs are all in the store.
    fn cached(&self, key: &str) -> Option<State> {
        if self.opts.no_cache {
            return None;
        }
        let name = format!("{CACHE_PREFIX}{key}");
        let info = self.store.get(&name).ok()?;
        let state = self.state_of(&info).ok()?;
        if info.layers.iter().any(|d| self.store.layer_dir(d).map_or(true, |p| !p.is_dir())) {
            return None;
        }
        Some(State { record: Some(name), ..state })
    }

    /// An image of the store as a build state (its kept config and manifest).
    fn state_of(&self, info: &ImageInfo) -> Result<State, BuildError> {
        let kept = |d: &str, what: &str| -> Result<Vec<u8>, BuildError> {
            fs::read(self.store.blob_path(d)?).map_err(|_| {
                BuildError::Image(ImageError::Invalid(format!("{}: the store has not kept its {what} (blob {d}), which the built image's manifest must name: pull or import it again with its blobs kept (`--keep-blobs`)", info.name)))
            })
        };
        let manifest: ImageManifest = parse_json(&kept(&info.manifest, "manifest")?, "manifest")?;
        let config: Value = serde_json::from_slice(&kept(&info.config_digest, "config")?).map_err(|e| ImageError::Invalid(format!("{}'s config: {e}", info.name)))?;
        if manifest.layers().len() != info.layers.len() {
            return Err(ImageError::Invalid(format!("{}: its manifest has {} layers, its record {}", info.name, manifest.layers().len(), info.layers.len())).into());
        }
        let mut layers = Vec::new();
        for (d, diff_id) in manifest.layers().iter().zip(&info.layers) {
            let digest = d.digest().to_string();
            if !self.store.blob_path(&digest)?.is_file() {
                kept(&digest, "layer blob")?;
            }
            layers.push(LayerDesc { media_type: d.media_type().to_string(), digest, size: d.size(), diff_id: diff_id.clone() });
        }
        Ok(State { config, layers, record: Some(info.name.clone()), cmd_set: false })
    }

    /// The directories of a state's layers, top first.
    fn layer_dirs(&self, s: &State) -> Result<Vec<PathBuf>, BuildError> {
        Ok(s.layers.iter().rev().map(|l| self.store.layer_dir(&l.diff_id)).collect::<Result<_, _>>()?)
    }

    /// Makes sure `state` is a record of the store (to run a step on it or copy from it).
    fn ensure_record(&self, state: &mut State) -> Result<String, BuildError> {
        if let Some(r) = &state.record {
            return Ok(r.clone());
        }
        let name = format!("{CACHE_PREFIX}{}", state.key());
        if self.store.get(&name).is_err() {
            self.commit(state, &name, None)?;
        }
        state.record = Some(name.clone());
        Ok(name)
    }

    /// Stacks a new layer (its blob in `blob`) and records the result under the step's key.
    fn add_layer(&self, mut state: State, blob: &Path, written: &super::WrittenLayer, key: &str, by: &str) -> Result<State, BuildError> {
        state.layers.push(LayerDesc { media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(), digest: written.digest.clone(), size: written.size, diff_id: written.diff_id.clone() });
        match state.config.pointer_mut("/rootfs/diff_ids").and_then(Value::as_array_mut) {
            Some(a) => a.push(json!(written.diff_id)),
            None => state.config["rootfs"] = json!({"type": "layers", "diff_ids": state.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}),
        }
        state.config["created"] = json!(self.created);
        state.history(&self.created, by, false);
        let name = format!("{CACHE_PREFIX}{key}");
        self.commit(&state, &name, Some(blob))?;
        state.record = Some(name);
        Ok(state)
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn event(&mut self, e: BuildEvent) -> Result<(), BuildError> {
        if self.cancelled() {
            return Err(ImageError::Cancelled.into());
        }
        match (self.progress)(&e) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(ImageError::Cancelled.into()),
        }
    }
}

/// A step's cache key: the parent's config digest, the instruction and what else it reads.
fn step_key(parent: &State, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.key().as_bytes());
    for p in parts {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

/// Whether `rel` (absolute in the image) exists in the layers (top first), as overlayfs would
/// see it: the first layer holding it or a whiteout of it decides. Metadata (mode, uid, gid) of
/// what is there.
fn in_layers(layers_top_first: &[PathBuf], rel: &str) -> Option<(u32, u32, u32, bool)> {
    let rel = clean(rel.trim_start_matches('/'));
    if rel.is_empty() {
        return Some((0o40755, 0, 0, true));
    }
    // Looked up inside each layer without following any symlink (a step may have planted one:
    // it must never make this read the host's files).
    let look = |dir: &Path, rel: &str| -> Result<fs::Metadata, rustix::io::Errno> {
        let root = fs::File::open(dir).map_err(|_| rustix::io::Errno::NOENT)?;
        let fd = open_beneath(std::os::fd::AsFd::as_fd(&root), rel, rustix::fs::OFlags::PATH).map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))?;
        fs::File::from(fd).metadata().map_err(|_| rustix::io::Errno::IO)
    };
    for dir in layers_top_first {
        match look(dir, &rel) {
            Ok(md) if std::os::unix::fs::FileTypeExt::is_char_device(&md.file_type()) && md.rdev() == 0 => return None,
            Ok(md) => return Some((md.mode(), md.uid(), md.gid(), md.is_dir())),
            // A symlink on the way: the path is not a plain directory of the image.
            Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::XDEV) => return Some((0o120777, 0, 0, false)),
            Err(_) => {
                // A parent that is a file or a whiteout hides the rest below.
                let mut cur = Path::new(&rel);
                while let Some(parent) = cur.parent().filter(|p| !p.as_os_str().is_empty()) {
                    if look(dir, &parent.to_string_lossy()).is_ok_and(|m| !m.is_dir()) {
                        return None;
                    }
                    cur = parent;
                }
            }
        }
    }
    None
}

/// Makes `path` (absolute in the image) and its missing parents in `upper` (0755, root's), those
/// the layers below lack only: a directory the image has is left to overlayfs.
fn make_missing_dirs(upper: &Path, layers_top_first: &[PathBuf], path: &str) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    let mut made = Vec::new();
    let mut p = PathBuf::from("/");
    for c in Path::new(path).components().filter(|c| matches!(c, Component::Normal(_))) {
        p.push(c);
        let up = upper.join(p.strip_prefix("/").unwrap_or(&p));
        if in_layers(layers_top_first, &p.to_string_lossy()).is_some() || up.exists() {
            continue;
        }
        fs::DirBuilder::new().mode(0o755).create(&up)?;
        fs::set_permissions(&up, fs::Permissions::from_mode(0o755))?;
        made.push(up);
    }
    Ok(made)
}

/// `RUN --mount` and `RUN --network`.
#[derive(Default)]
struct RunFlags {
    mounts: Vec<StepMount>,
    network: Option<bool>,
}

/// One `RUN --mount=...`.
#[derive(Debug)]
enum StepMount {
    /// A directory kept between builds (in the store), not part of any layer.
    Cache { target: String, id: String, locked: bool, mode: u32, uid: u32, gid: u32, read_only: bool },
    /// Files of the context (or of a stage), read-only.
    Bind { target: String, source: String, from: Option<String> },
    Tmpfs { target: String, size: Option<Size> },
}

impl StepMount {
    fn target(&self) -> &str {
        match self {
            StepMount::Cache { target, .. } | StepMount::Bind { target, .. } | StepMount::Tmpfs { target, .. } => target,
        }
    }

    /// `type=cache,target=/x,id=..,sharing=shared|locked|private,mode=,uid=,gid=,ro`,
    /// `type=bind,target=/x,source=..,from=..`, `type=tmpfs,target=/x,size=..`.
    fn parse(v: &str) -> Result<StepMount, String> {
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in v.split(',').filter(|p| !p.is_empty()) {
            let (k, val) = part.split_once('=').unwrap_or((part, "true"));
            let k = match k {
                "dst" | "destination" => "target",
                "src" => "source",
                "readonly" => "ro",
                k => k,
            };
            if kv.insert(k.to_string(), val.to_string()).is_some() {
                return Err(format!("{k} given twice"));
            }
        }
        let ty = kv.remove("type").unwrap_or_else(|| "bind".into());
        if matches!(ty.as_str(), "secret" | "ssh") {
            return Err(format!("type={ty}: not supported (pass secrets another way than through an image build)"));
        }
        let target = kv.remove("target").ok_or("needs a target")?;
        if !target.starts_with('/') || clean(&target).starts_with("..") || clean(&target).is_empty() {
            return Err(format!("target {target}: an absolute path other than /"));
        }
        let target = format!("/{}", clean(&target));
        let yes = |v: Option<String>| -> Result<bool, String> {
            match v.as_deref() {
                None | Some("false") => Ok(false),
                Some("true") | Some("") => Ok(true),
                Some(o) => Err(format!("{o}: expected true or false")),
            }
        };
        let num = |v: Option<String>, what: &str, radix: u32, dflt: u32| -> Result<u32, String> { v.map_or(Ok(dflt), |s| u32::from_str_radix(s.trim_start_matches("0o"), radix).map_err(|_| format!("{what}={s}: not a number"))) };
        let m = match ty.as_str() {
            "cache" => {
                let sharing = kv.remove("sharing").unwrap_or_else(|| "shared".into());
                let locked = match sharing.as_str() {
                    "shared" => false,
                    // One step at a time, across builds of this store (a private copy per
                    // concurrent step would be BuildKit's "private"; waiting is safe too).
                    "locked" | "private" => true,
                    o => return Err(format!("sharing={o}: expected shared, locked or private")),
                };
                StepMount::Cache {
                    id: kv.remove("id").unwrap_or_else(|| target.clone()),
                    locked,
                    mode: num(kv.remove("mode"), "mode", 8, 0o755)?,
                    uid: num(kv.remove("uid"), "uid", 10, 0)?,
                    gid: num(kv.remove("gid"), "gid", 10, 0)?,
                    read_only: yes(kv.remove("ro"))?,
                    target,
                }
            }
            "bind" => {
                if yes(kv.remove("rw"))? || yes(kv.remove("readwrite"))? {
                    return Err("rw: a bind mount is read-only here (what a step writes there would be thrown away anyway)".into());
                }
                kv.remove("ro");
                StepMount::Bind { source: kv.remove("source").unwrap_or_else(|| ".".into()), from: kv.remove("from"), target }
            }
            "tmpfs" => StepMount::Tmpfs { size: kv.remove("size").map(|s| s.parse::<Size>().map_err(|e| format!("size={s}: {e}"))).transpose()?, target },
            o => return Err(format!("type={o}: expected cache, bind or tmpfs")),
        };
        if let Some(k) = kv.keys().next() {
            return Err(format!("{k}: unknown option for type={ty}"));
        }
        Ok(m)
    }
}

/// Parses `--chown=user[:group]` against the image's /etc/passwd and /etc/group.
fn chown_ids(spec: &str, layers_top_first: &[PathBuf]) -> Option<(u32, u32)> {
    let (u, g) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let uid = u.parse::<u32>().ok();
    let gid = g.and_then(|g| g.parse::<u32>().ok());
    match (uid, g, gid) {
        (Some(u), None, _) => Some((u, u)),
        (Some(u), Some(_), Some(g)) => Some((u, g)),
        _ => super::resolve_user(spec, layers_top_first),
    }
}

impl ImageStore {
    /// Builds an image from a Dockerfile and a context directory; see the module docs of
    /// `image::build` and docs/build.md. `progress` sees each step; returning
    /// `ControlFlow::Break` cancels the build (nothing is tagged).
    ///
    /// ```no_run
    /// let store = cagette::ImageStore::open(cagette::ImageStore::default_dir())?;
    /// let mut opts = cagette::BuildOptions::default();
    /// opts.tag = Some("app:1".into());
    /// let image = store.build("./app".as_ref(), &opts, &mut |e| { println!("{e:?}"); std::ops::ControlFlow::Continue(()) })?;
    /// println!("{}", image.manifest);
    /// # Ok::<(), cagette::BuildError>(())
    /// ```
    pub fn build(&self, context: &Path, opts: &BuildOptions, progress: &mut dyn FnMut(&BuildEvent) -> ControlFlow<()>) -> Result<ImageInfo, BuildError> {
        let md = fs::metadata(context).map_err(io_err(format!("the build context {}", context.display())))?;
        if !md.is_dir() {
            return Err(io_err(format!("the build context {}", context.display()))(io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let file = opts.dockerfile.clone().unwrap_or_else(|| context.join("Dockerfile"));
        let text = {
            let f = open_regular(&file).map_err(io_err(format!("read the Dockerfile {}", file.display())))?;
            let mut s = String::new();
            f.take(4 << 20).read_to_string(&mut s).map_err(io_err(format!("read the Dockerfile {}", file.display())))?;
            s
        };
        let (text, late_docs) = blank_late_heredocs(&text);
        let df = parse_dockerfile::parse(&text).map_err(|e| {
            let mut message = e.to_string();
            // A here-document later on a line that `blank_late_heredocs` leaves alone (another
            // instruction than RUN, an exec form, a custom escape character) is read as
            // instructions.
            if text.lines().take(e.line().saturating_sub(1)).any(|l| l.contains("<<") && !l.split_whitespace().nth(1).is_some_and(|w| w.starts_with("<<"))) {
                message.push_str(" (a here-document after the command is read for RUN in shell form only: `RUN cat <<EOF > file`; elsewhere it must come first: `COPY <<EOF /file`)");
            }
            BuildError::Parse { file: file.clone(), line: e.line(), column: e.column(), message }
        })?;
        let escape = df.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
        let epoch = opts.epoch.or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok())).unwrap_or(0);
        let store = self.clone().keep_blobs(true);
        let tree = Tree::new(context.to_path_buf(), ignore_rules(context)?, "build context").map_err(io_err(format!("open the build context {}", context.display())))?;
        let mut b = Builder { store, opts, file: file.clone(), text: &text, escape, epoch, created: rfc3339(epoch), progress, step: 0, total: 0, stages: Vec::new(), global_args: BTreeMap::new(), late_docs };
        // Arguments declared before the first FROM (usable in FROM lines).
        for a in df.global_args() {
            for (k, v) in pairs(&a.arguments.value, &|n| b.opts.build_args.get(n).cloned(), escape, false).map_err(|m| b.bad(a.arg.span.start, m))? {
                b.global_args.insert(k, v);
            }
        }
        let stages: Vec<_> = df.stages().collect();
        if stages.is_empty() {
            return Err(b.bad(0, "no FROM: a Dockerfile starts with FROM (after ARGs)"));
        }
        let last = match &opts.target {
            None => stages.len() - 1,
            Some(t) => stages.iter().position(|s| s.from.as_.as_ref().is_some_and(|(_, n)| n.value.eq_ignore_ascii_case(t))).or_else(|| t.parse::<usize>().ok().filter(|&i| i < stages.len())).ok_or_else(|| b.bad(0, format!("--target {t}: no stage of that name or index")))?,
        };
        b.total = stages[..=last].iter().map(|s| s.instructions.len() + 1).sum();
        for stage in &stages[..=last] {
            let state = b.run_stage(stage, &tree)?;
            let name = stage.from.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase());
            b.stages.push((name, state));
        }
        let (_, mut fin) = b.stages.pop().ok_or_else(|| b.bad(0, "no stage"))?;
        let info = match &opts.tag {
            Some(tag) => {
                if is_cache_name(tag) {
                    return Err(b.bad(0, format!("{tag}: names starting with {CACHE_PREFIX} are the build cache's")));
                }
                b.commit(&fin, tag, None)?
            }
            None => {
                let r = b.ensure_record(&mut fin)?;
                b.store.get(&r)?
            }
        };
        // The image is recorded: a cancel now comes too late and is not an error.
        let _ = (b.progress)(&BuildEvent::Done(info.manifest.clone()));
        Ok(info)
    }
}

impl Builder<'_> {
    fn run_stage(&mut self, stage: &parse_dockerfile::Stage<'_, '_>, tree: &Tree) -> Result<State, BuildError> {
        let from = stage.from;
        let pos = from.from.span.start;
        self.step += 1;
        let line_text = self.text[from.from.span.start..].lines().next().unwrap_or("").to_string();
        let (n, total, line) = (self.step, self.total, self.line_of(pos));
        self.event(BuildEvent::Step { n, total, line, text: line_text })?;
        if let Some(f) = from.options.first() {
            return Err(self.bad(pos, format!("FROM --{}: not supported (images are for this machine's platform)", f.name.value)));
        }
        let global = self.global_args.clone();
        let image = words(&from.image.value, &|n| global.get(n).cloned().flatten(), self.escape).map_err(|m| self.bad(pos, m))?.join(" ");
        let mut state = if image == "scratch" {
            State::scratch()
        } else if let Some((_, s)) = self.stages.iter().find(|(n, _)| n.as_deref() == Some(image.to_ascii_lowercase().as_str())) {
            State { cmd_set: false, ..s.clone() }
        } else {
            self.base(&image).map_err(|e| match e {
                BuildError::Image(ImageError::NotFound(n)) => self.bad(pos, format!("FROM {image}: no image named {n:?} in the store: pull or import it with its blobs kept (`--keep-blobs`), or let the build pull it (`--pull missing`)")),
                e => self.bad(pos, format!("FROM {image}: {e}")),
            })?
        };
        // Stage-scoped ARGs: declared in the stage, valued from --build-arg or the default.
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for ins in stage.instructions {
            self.step += 1;
            let pos = instruction_start(ins);
            let line = self.line_of(pos);
            let first_line = self.text[pos..].lines().next().unwrap_or("").trim().to_string();
            let (n, total) = (self.step, self.total);
            self.event(BuildEvent::Step { n, total, line, text: first_line.clone() })?;
            let env = state.env();
            let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).or_else(|| args.get(n).cloned());
            let esc = self.escape;
            let one = |s: &str| -> Result<String, BuildError> { words(s, &lookup, esc).map(|w| w.join(" ")).map_err(|m| self.bad(pos, m)) };
            let created = self.created.clone();
            match ins {
                Instruction::Arg(a) => {
                    for (k, v) in pairs(&a.arguments.value, &lookup, esc, false).map_err(|m| self.bad(pos, m))? {
                        let value = self.opts.build_args.get(&k).cloned().or(v).or_else(|| self.global_args.get(&k).cloned().flatten());
                        if let Some(v) = value {
                            args.insert(k, v);
                        }
                    }
                }
                Instruction::Env(e) => {
                    let kv = pairs(&e.arguments.value, &lookup, esc, true).map_err(|m| self.bad(pos, m))?;
                    let mut shown = Vec::new();
                    for (k, v) in kv {
                        let v = v.unwrap_or_default();
                        shown.push(format!("{k}={v}"));
                        state.set_env(&k, &v);
                    }
                    state.history(&created, &format!("ENV {}", shown.join(" ")), true);
                }
                Instruction::Label(l) => {
                    let kv = pairs(&l.arguments.value, &lookup, esc, true).map_err(|m| self.bad(pos, m))?;
                    let cfg = state.cfg();
                    let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    for (k, v) in kv {
                        labels[k] = json!(v.unwrap_or_default());
                    }
                    state.history(&created, &format!("LABEL {}", l.arguments.value.trim()), true);
                }
                Instruction::Maintainer(m) => {
                    state.config["author"] = json!(m.name.value.trim());
                    state.history(&created, &format!("MAINTAINER {}", m.name.value.trim()), true);
                }
                Instruction::Workdir(w) => {
                    let dir = one(&w.arguments.value)?;
                    let cur = state.get_str("WorkingDir").unwrap_or_else(|| "/".into());
                    let abs = if dir.starts_with('/') { dir } else { format!("{}/{dir}", cur.trim_end_matches('/')) };
                    let abs = format!("/{}", clean(&abs));
                    state.cfg().insert("WorkingDir".into(), json!(abs));
                    state.history(&created, &format!("WORKDIR {abs}"), true);
                }
                Instruction::User(u) => {
                    let user = one(&u.arguments.value)?;
                    state.cfg().insert("User".into(), json!(user));
                    state.history(&created, &format!("USER {user}"), true);
                }
                Instruction::Cmd(c) => {
                    let v = self.command(&state, &c.arguments);
                    state.cfg().insert("Cmd".into(), json!(v));
                    state.cmd_set = true;
                    state.history(&created, &format!("CMD {}", json!(v)), true);
                }
                Instruction::Entrypoint(e) => {
                    let v = self.command(&state, &e.arguments);
                    state.cfg().insert("Entrypoint".into(), json!(v));
                    if !state.cmd_set {
                        // Like Docker: an ENTRYPOINT drops the CMD inherited from the base.
                        state.cfg().remove("Cmd");
                    }
                    state.history(&created, &format!("ENTRYPOINT {}", json!(v)), true);
                }
                Instruction::Shell(s) => {
                    let v: Vec<String> = s.arguments.iter().map(|a| a.value.to_string()).collect();
                    state.cfg().insert("Shell".into(), json!(v));
                    state.history(&created, &format!("SHELL {}", json!(v)), true);
                }
                Instruction::Expose(e) => {
                    let mut ports = Vec::new();
                    for a in &e.arguments {
                        for p in words(&a.value, &lookup, esc).map_err(|m| self.bad(pos, m))? {
                            let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                            let proto = proto.to_ascii_lowercase();
                            if num.split('-').any(|n| n.parse::<u16>().is_err()) || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                                return Err(self.bad(pos, format!("EXPOSE {p}: expected PORT[/tcp|udp|sctp]")));
                            }
                            ports.push(format!("{num}/{proto}"));
                        }
                    }
                    let cfg = state.cfg();
                    let map = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                    if !map.is_object() {
                        *map = json!({});
                    }
                    for p in &ports {
                        map[p] = json!({});
                    }
                    state.history(&created, &format!("EXPOSE {}", ports.join(" ")), true);
                }
                Instruction::Volume(v) => {
                    let list: Vec<String> = match &v.arguments {
                        parse_dockerfile::JsonOrStringArray::Json(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
                        parse_dockerfile::JsonOrStringArray::String(a) => {
                            let mut out = Vec::new();
                            for s in a {
                                out.extend(words(&s.value, &lookup, esc).map_err(|m| self.bad(pos, m))?);
                            }
                            out
                        }
                    };
                    let cfg = state.cfg();
                    let map = cfg.entry("Volumes").or_insert_with(|| json!({}));
                    if !map.is_object() {
                        *map = json!({});
                    }
                    for p in &list {
                        map[p] = json!({});
                    }
                    state.history(&created, &format!("VOLUME {}", json!(list)), true);
                }
                Instruction::Stopsignal(s) => {
                    let sig = one(&s.arguments.value)?;
                    let known = sig.parse::<i32>().is_ok_and(|n| (1..=64).contains(&n)) || sig.trim_start_matches("SIG").parse::<nix::sys::signal::Signal>().is_ok() || format!("SIG{}", sig.trim_start_matches("SIG")).parse::<nix::sys::signal::Signal>().is_ok();
                    if !known {
                        return Err(self.bad(pos, format!("STOPSIGNAL {sig}: not a signal name or number")));
                    }
                    state.cfg().insert("StopSignal".into(), json!(sig));
                    state.history(&created, &format!("STOPSIGNAL {sig}"), true);
                }
                Instruction::Healthcheck(h) => {
                    let hc = self.healthcheck(&state, h).map_err(|m| self.bad(pos, m))?;
                    state.cfg().insert("Healthcheck".into(), hc);
                    state.history(&created, &format!("HEALTHCHECK {}", first_line_of(&self.text[pos..])), true);
                }
                Instruction::Onbuild(_) => return Err(self.bad(pos, "ONBUILD is not supported (and deprecated in the OCI image format): run those steps in the Dockerfile that uses the image")),
                Instruction::Run(r) => {
                    state = self.run(state, r, &args, tree, pos)?;
                }
                Instruction::Copy(c) => {
                    state = self.copy(state, "COPY", &c.options, &c.src, &c.dest.value, tree, &args, pos)?;
                }
                Instruction::Add(a) => {
                    state = self.copy(state, "ADD", &a.options, &a.src, &a.dest.value, tree, &args, pos)?;
                }
                Instruction::From(_) => return Err(self.bad(pos, "FROM inside a stage")),
                _ => return Err(self.bad(pos, format!("{first_line}: this instruction is not supported"))),
            }
        }
        Ok(state)
    }

    /// A FROM image as a build state: from the store, pulled (with its blobs kept) when the store
    /// lacks it or holds it without its blobs and `pull` allows.
    fn base(&mut self, image: &str) -> Result<State, BuildError> {
        let have = self.store.get(image);
        if let Ok(info) = &have
            && let Ok(state) = self.state_of(info) {
                return Ok(state);
            }
        #[cfg(feature = "registry")]
        if let Some(opts) = self.opts.pull.clone()
            && super::ImageReference::parse(image).is_ok() {
                self.event(BuildEvent::Pulling(image.to_string()))?;
                let info = self.store.pull(image, &opts)?;
                return self.state_of(&info);
            }
        let info = have?;
        self.state_of(&info)
    }

    /// The root of an earlier stage (by name or index) or of an image of the store, unpacked in
    /// a temporary directory (for `COPY --from` and `RUN --mount=type=bind,from=`).
    fn stage_root(&mut self, f: &str, pos: usize) -> Result<(TempDir, PathBuf), BuildError> {
        let fl = f.to_ascii_lowercase();
        let mut other = match self.stages.iter().find(|(n, _)| n.as_deref() == Some(fl.as_str())).or_else(|| f.parse::<usize>().ok().and_then(|i| self.stages.get(i))) {
            Some((_, s)) => s.clone(),
            None => {
                let info = self.store.get(f).map_err(|e| self.bad(pos, format!("--from={f}: no earlier stage of that name, and {e}")))?;
                self.state_of(&info)?
            }
        };
        let record = self.ensure_record(&mut other)?;
        let dir = TempDir::new("from")?;
        let root = dir.0.join("root");
        self.store.unpack(&record, &root)?;
        Ok((dir, root))
    }

    /// A cache mount's directory (made with this mode and owner the first time) and its lock
    /// file, kept in the store under `build-mounts/`, named by a hash of its id.
    fn cache_dir(&self, id: &str, mode: u32, uid: u32, gid: u32) -> Result<(PathBuf, fs::File), BuildError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = self.store.root.join("build-mounts");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&base).map_err(io_err(format!("create {}", base.display())))?;
        let name = hex(&Sha256::digest(id.as_bytes()))[..32].to_string();
        let dir = base.join(&name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                std::os::unix::fs::lchown(&dir, Some(uid), Some(gid)).map_err(io_err(format!("chown the cache mount {id}")))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(format!("chmod the cache mount {id}")))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("create the cache mount {id}"))(e)),
        }
        if fs::symlink_metadata(&dir).map(|m| !m.is_dir()).unwrap_or(true) {
            return Err(io_err(format!("the cache mount {id}"))(io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(base.join(format!("{name}.lock"))).map_err(io_err(format!("lock the cache mount {id}")))?;
        Ok((dir, lock))
    }

    /// CMD/ENTRYPOINT/RUN as argv: the exec form as written, the shell form through SHELL.
    fn command(&self, state: &State, c: &Command<'_>) -> Vec<String> {
        match c {
            Command::Exec(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
            Command::Shell(s) => {
                let mut v = state.shell();
                v.push(s.value.to_string());
                v
            }
            _ => Vec::new(),
        }
    }

    fn healthcheck(&self, state: &State, h: &parse_dockerfile::HealthcheckInstruction<'_>) -> Result<Value, String> {
        let mut hc = serde_json::Map::new();
        match &h.arguments {
            parse_dockerfile::HealthcheckArguments::None { .. } => {
                hc.insert("Test".into(), json!(["NONE"]));
            }
            parse_dockerfile::HealthcheckArguments::Cmd { arguments, .. } => {
                let test = match arguments {
                    Command::Exec(a) => std::iter::once("CMD".to_string()).chain(a.value.iter().map(|s| s.value.to_string())).collect::<Vec<_>>(),
                    Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.value.to_string()],
                    _ => return Err("HEALTHCHECK: unsupported form".into()),
                };
                let _ = state;
                hc.insert("Test".into(), json!(test));
            }
            _ => return Err("HEALTHCHECK: unsupported form".into()),
        }
        for f in &h.options {
            let v = f.value.as_ref().map(|v| v.value.to_string()).unwrap_or_default();
            let key = match &*f.name.value {
                "interval" => "Interval",
                "timeout" => "Timeout",
                "start-period" => "StartPeriod",
                "start-interval" => "StartInterval",
                "retries" => {
                    hc.insert("Retries".into(), json!(v.parse::<u32>().map_err(|_| format!("HEALTHCHECK --retries={v}: expected a number"))?));
                    continue;
                }
                other => return Err(format!("HEALTHCHECK --{other}: unknown option")),
            };
            let d = crate::parse_duration(&v).map_err(|e| format!("HEALTHCHECK --{}={v}: {e}", f.name.value))?;
            hc.insert(key.into(), json!(d.as_nanos() as u64));
        }
        Ok(Value::Object(hc))
    }

    fn run(&mut self, state: State, r: &parse_dockerfile::RunInstruction<'_>, args: &BTreeMap<String, String>, tree: &Tree, pos: usize) -> Result<State, BuildError> {
        let env = state.env();
        let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).or_else(|| args.get(n).cloned());
        let mut flags = RunFlags::default();
        for f in &r.options {
            let v = f.value.as_ref().map(|v| v.value.to_string()).unwrap_or_default();
            let v = words(&v, &lookup, self.escape).map_err(|m| self.bad(pos, m))?.join(" ");
            match &*f.name.value {
                "mount" => flags.mounts.push(StepMount::parse(&v).map_err(|m| self.bad(pos, format!("RUN --mount={v}: {m}")))?),
                "network" => {
                    flags.network = Some(match v.as_str() {
                        "host" => true,
                        "none" => false,
                        "default" => self.opts.network_host,
                        _ => return Err(self.bad(pos, format!("RUN --network={v}: expected host, none or default"))),
                    })
                }
                other => return Err(self.bad(pos, format!("RUN --{other}: not supported"))),
            }
        }
        let argv = match r.here_docs.as_slice() {
            [] => match (self.late_docs.get(&r.run.span.start), &r.arguments) {
                // `RUN cmd <<EOF`: the command line and its documents, one shell script.
                (Some(docs), Command::Shell(line)) => {
                    let mut v = state.shell();
                    v.push(format!("{}\n{docs}\n", line.value.trim_end()));
                    v
                }
                _ => self.command(&state, &r.arguments),
            },
            [doc] => {
                // `RUN <<EOF` runs the document as a script (through its #! interpreter if it
                // has one); `RUN <<EOF cmd` gives it to cmd's standard input. Either way the
                // shell reads it as a here-document: quoted delimiter, no expansion.
                let Command::Shell(rest) = &r.arguments else { return Err(self.bad(pos, "RUN <<EOF with an exec-form command: not supported")) };
                let rest = rest.value.trim();
                let body = doc.value.as_ref();
                let cmd = if !rest.is_empty() {
                    rest.to_string()
                } else if let Some(interp) = body.strip_prefix("#!").and_then(|b| b.lines().next()) {
                    interp.trim().to_string()
                } else {
                    let mut v = state.shell();
                    v.push(body.to_string());
                    return self.run_argv(state, v, args, &flags, tree, pos);
                };
                let delim = "CAGETTE_HEREDOC_END";
                if body.lines().any(|l| l == delim) {
                    return Err(self.bad(pos, format!("the here-document holds the line {delim}")));
                }
                let quote = if doc.expand { "" } else { "'" };
                let mut v = state.shell();
                v.push(format!("{cmd} <<{quote}{delim}{quote}\n{body}{}{delim}\n", if body.ends_with('\n') || body.is_empty() { "" } else { "\n" }));
                v
            }
            _ => return Err(self.bad(pos, "RUN with several here-documents: not supported")),
        };
        self.run_argv(state, argv, args, &flags, tree, pos)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_argv(&mut self, state: State, argv: Vec<String>, args: &BTreeMap<String, String>, flags: &RunFlags, tree: &Tree, pos: usize) -> Result<State, BuildError> {
        if argv.is_empty() {
            return Err(self.bad(pos, "RUN needs a command"));
        }
        // The step sees the stage's ARGs as environment variables (ENV wins), not kept after.
        let env_names: Vec<String> = state.env().into_iter().map(|(k, _)| k).collect();
        let mut step_args: Vec<(String, String)> = args.iter().filter(|(k, _)| !env_names.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let shown = format!("RUN {}", json!(argv));
        let arg_text: Vec<String> = step_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Docker's predefined proxy arguments reach every RUN without an ARG line, and, as
        // there, they are not part of the cache key (a proxy does not change what a step makes).
        for (k, v) in &self.opts.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && !step_args.iter().any(|(a, _)| a == k) && !env_names.contains(k) {
                step_args.push((k.clone(), v.clone()));
            }
        }
        let host_net = flags.network.unwrap_or(self.opts.network_host);
        let net = if host_net { "host" } else { "none" };
        // The mounts: a bind's files are part of the key (as COPY's); a cache's are not.
        let mut mount_text = Vec::new();
        let mut binds: Vec<(PathBuf, String)> = Vec::new();
        let mut keep_unpacked = Vec::new();
        for m in &flags.mounts {
            mount_text.push(format!("{m:?}"));
            if let StepMount::Bind { target, source, from } = m {
                let unpacked;
                let t = match from {
                    None => tree,
                    Some(f) => {
                        let (dir, root) = self.stage_root(f, pos)?;
                        unpacked = Tree::new(root, Vec::new(), "stage's root").map_err(|e| self.bad(pos, format!("RUN --mount: open the stage's root: {e}")))?;
                        keep_unpacked.push(dir);
                        &unpacked
                    }
                };
                let (real, _) = t.check_inside(&clean(source)).map_err(|e| self.bad(pos, format!("RUN --mount: {e}")))?;
                let mut all = Vec::new();
                t.walk(&real, &mut all, String::new()).map_err(|e| self.bad(pos, format!("RUN --mount: {e}")))?;
                let picks: Vec<Pick> = all.into_iter().map(|(src, below)| Pick { src, dest: below }).collect();
                mount_text.push(hash_picks(t, &picks, self.epoch).map_err(|e| self.bad(pos, format!("RUN --mount: {e}")))?);
                binds.push((t.root.join(&real), target.clone()));
            }
        }
        let key = step_key(&state, &[&shown, &arg_text.join("\n"), net, &mount_text.join("\n")]);
        if let Some(hit) = self.cached(&key) {
            self.event(BuildEvent::Cached)?;
            return Ok(hit);
        }
        let mut state = state;
        let record = self.ensure_record(&mut state)?;
        let tmp = TempDir::new("run")?;
        let (upper, work) = (tmp.0.join("upper"), tmp.0.join("work"));
        for d in [&upper, &work] {
            fs::create_dir(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        // The working directory and the VOLUME directories, made in the step's layer if the
        // image lacks them (as Docker's and buildah's RUN do).
        let dirs = self.layer_dirs(&state)?;
        let mut wanted = vec![state.get_str("WorkingDir").filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())];
        if let Some(v) = state.config.pointer("/config/Volumes").and_then(Value::as_object) {
            wanted.extend(v.keys().cloned());
        }
        for w in &wanted {
            make_missing_dirs(&upper, &dirs, w).map_err(io_err(format!("create {w} in the step's layer")))?;
        }
        // Mount points the image lacks are made here and removed after the step (when still
        // empty): they are not the step's files.
        let mut mount_points = Vec::new();
        let mut mounts = Vec::new();
        let mut locks = Vec::new();
        for m in &flags.mounts {
            let target = m.target();
            mount_points.extend(make_missing_dirs(&upper, &dirs, target).map_err(io_err(format!("make the mount point {target}")))?);
            match m {
                StepMount::Cache { id, locked, mode, uid, gid, read_only, .. } => {
                    let (dir, lock) = self.cache_dir(id, *mode, *uid, *gid)?;
                    if *locked {
                        use nix::fcntl::{Flock, FlockArg};
                        locks.push(Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| io_err(format!("lock the cache mount {id}"))(e.into()))?);
                    }
                    mounts.push(crate::Mount::Bind { source: dir, destination: target.to_string(), read_only: *read_only, recursive: false, flags: Default::default() });
                }
                StepMount::Tmpfs { size, .. } => mounts.push(crate::Mount::Tmpfs { destination: target.to_string(), size: *size, mode: None, flags: Default::default(), source: None }),
                StepMount::Bind { .. } => {}
            }
        }
        for (source, target) in &binds {
            mounts.push(crate::Mount::Bind { source: source.clone(), destination: target.clone(), read_only: true, recursive: false, flags: Default::default() });
        }
        let mut spec = SandboxSpec {
            mounts,
            image: Some(record),
            image_store: Some(self.store.root.clone()),
            image_upper: Some(upper.clone()),
            image_work: Some(work.clone()),
            argv: argv.clone(),
            entrypoint: Some(Vec::new()),
            env: step_args.into_iter().collect(),
            network: if host_net { Network::Host } else { Network::None },
            // Like Docker's RUN: /tmp is the image's (what a step leaves there is in its layer).
            tmp: false,
            capabilities: Some(crate::DEFAULT_CAPABILITIES.to_vec()),
            memory: self.opts.memory,
            cpus: self.opts.cpus,
            pids: self.opts.pids,
            timeout: self.opts.step_timeout,
            stdin: Stdio::Null,
            ..SandboxSpec::default()
        };
        let line = self.line_of(pos);
        let sandbox_err = |e| BuildError::Sandbox { file: self.file.clone(), line, source: e };
        // The step's output: the caller's stderr as it goes (the CLI), or a file of the step's
        // (both streams, in order) whose end the error of a failing step shows.
        let log_path = tmp.0.join("output");
        let log = if self.opts.inherit_output {
            spec.stdout = Stdio::Fd(2);
            spec.stderr = Stdio::Inherit;
            None
        } else {
            let f = fs::File::create(&log_path).map_err(io_err("create the step's output file"))?;
            spec.stdout = Stdio::Fd(std::os::fd::AsRawFd::as_raw_fd(&f));
            spec.stderr = Stdio::Fd(std::os::fd::AsRawFd::as_raw_fd(&f));
            Some(f)
        };
        let mut child = Sandbox::from_spec(spec).spawn().map_err(sandbox_err)?;
        drop(log);
        let outcome = loop {
            if let Some(o) = child.wait_timeout(Duration::from_millis(50)).map_err(sandbox_err)? {
                break o;
            }
            if self.cancelled() {
                let _ = child.kill(libc::SIGKILL);
                let _ = child.wait();
                return Err(ImageError::Cancelled.into());
            }
        };
        if outcome.verdict != Verdict::Exited(0) {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(&log_path) {
                use std::io::Seek;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.seek(io::SeekFrom::Start(len.saturating_sub(8192)));
                let mut buf = Vec::new();
                let _ = f.take(8192).read_to_end(&mut buf);
                text = String::from_utf8_lossy(&buf).into_owned();
                if len > 8192 {
                    text = format!("[...]{text}");
                }
            }
            return Err(BuildError::Step { file: self.file.clone(), line, command: argv.join(" "), verdict: describe(&outcome.verdict), status: outcome.verdict.code(), output: text });
        }
        drop(locks);
        for p in mount_points.iter().rev() {
            // Only if still an empty directory (the step may have put files there).
            let _ = fs::remove_dir(p);
        }
        let blob = tmp.0.join("layer.tar.gz");
        let f = fs::File::create(&blob).map_err(io_err("write the step's layer"))?;
        // Rootless, the step's root is the caller's own user: its files are root's in the layer.
        let owner = (crate::host::euid() != 0).then(|| (crate::host::euid(), crate::host::egid()));
        let written = super::layer::write_layer_mapped(&upper, self.epoch, io::BufWriter::new(f), owner).map_err(BuildError::Image)?;
        let by = format!("RUN {}", argv.join(" "));
        self.add_layer(state, &blob, &written, &key, &by)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(&mut self, state: State, what: &str, options: &[parse_dockerfile::Flag<'_>], src: &[Source<'_>], dest: &str, context: &Tree, args: &BTreeMap<String, String>, pos: usize) -> Result<State, BuildError> {
        let env = state.env();
        let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).or_else(|| args.get(n).cloned());
        let esc = self.escape;
        let mut attrs = CopyAttrs::default();
        let mut from: Option<String> = None;
        let dirs = self.layer_dirs(&state)?;
        for f in options {
            let v = f.value.as_ref().map(|v| v.value.to_string()).unwrap_or_default();
            let v = words(&v, &lookup, esc).map_err(|m| self.bad(pos, m))?.join(" ");
            match &*f.name.value {
                "from" if what == "COPY" => from = Some(v),
                "chown" => attrs.chown = Some(chown_ids(&v, &dirs).ok_or_else(|| self.bad(pos, format!("{what} --chown={v}: no such user or group in the image (give numbers, or add them to its /etc/passwd and /etc/group first)")))?),
                "chmod" => attrs.chmod = Some(u32::from_str_radix(&v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| self.bad(pos, format!("{what} --chmod={v}: expected an octal mode such as 0644")))?),
                "link" => {}
                other => return Err(self.bad(pos, format!("{what} --{other}: not supported"))),
            }
        }
        // Where the files come from: the context, or another stage's (or image's) root.
        let unpacked;
        let tree = match &from {
            None => context,
            Some(f) => {
                let (dir, root) = self.stage_root(f, pos)?;
                let t = Tree::new(root, Vec::new(), "stage's root").map_err(|e| self.bad(pos, format!("{what}: open the stage's root: {e}")))?;
                unpacked = (dir, t);
                &unpacked.1
            }
        };
        let dest_words = words(dest, &lookup, esc).map_err(|m| self.bad(pos, m))?.join(" ");
        let workdir = state.get_str("WorkingDir").unwrap_or_else(|| "/".into());
        let dest_abs = if dest_words.starts_with('/') { dest_words.clone() } else { format!("{}/{dest_words}", workdir.trim_end_matches('/')) };
        let dest_is_dir = dest_words.ends_with('/') || dest_words == "." || in_layers(&dirs, &dest_abs).is_some_and(|m| m.3);
        let dest_clean = format!("/{}", clean(&dest_abs));
        let mut sources = Vec::new();
        let mut docs: Vec<(String, String)> = Vec::new();
        for s in src {
            match s {
                Source::Path(p) => {
                    let w = words(&p.value, &lookup, esc).map_err(|m| self.bad(pos, m))?.join(" ");
                    if w.contains("://") {
                        return Err(self.bad(pos, format!("{what} {w}: downloading is not supported (fetch it in a RUN step, or into the context first)")));
                    }
                    sources.push(w);
                }
                Source::HereDoc(doc) => {
                    // The document's text as a file of the context (named after its
                    // delimiter), variables expanded unless the delimiter was quoted.
                    let names = heredoc_names(self.text[pos..].lines().next().unwrap_or(""));
                    let name = names.get(docs.len()).cloned().ok_or_else(|| self.bad(pos, format!("{what}: cannot find the here-document's name")))?;
                    let text = if doc.expand { expand_only(&doc.value, &lookup, esc).map_err(|m| self.bad(pos, m))? } else { doc.value.to_string() };
                    docs.push((name, text));
                }
                _ => return Err(self.bad(pos, format!("{what}: unsupported source"))),
            }
        }
        let mut matched = Vec::new();
        for s in &sources {
            matched.extend(tree.matches(s).map_err(|m| self.bad(pos, format!("{what}: {m}")))?);
        }
        let doc_dests: Vec<String> = docs.iter().map(|(name, _)| if dest_is_dir { format!("{}/{name}", dest_clean.trim_end_matches('/')) } else { dest_clean.clone() }).collect();
        if matched.len() + docs.len() > 1 && !dest_is_dir {
            return Err(self.bad(pos, format!("{what} of several files to {dest_words}: the destination must be a directory (end it with /)")));
        }
        let mut picks = Vec::new();
        let mut archives: Vec<(String, String)> = Vec::new();
        for m in &matched {
            let (real, md) = tree.check_inside(m).map_err(|e| self.bad(pos, format!("{what}: {e}")))?;
            // A named symlink is followed (inside the tree); the copy keeps the name given.
            let name = Path::new(m).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let m = &real;
            if what == "ADD" && md.is_file() && tree.open_regular(m).is_ok_and(is_tar) {
                // A local archive is extracted into the destination (a directory).
                archives.push((m.clone(), format!("{}/", dest_clean.trim_end_matches('/'))));
                picks.push(Pick { src: m.clone(), dest: String::new() });
                continue;
            }
            if md.is_dir() {
                let mut all = Vec::new();
                tree.walk(m, &mut all, String::new()).map_err(|e| self.bad(pos, format!("{what}: {e}")))?;
                for (s, below) in all {
                    if below.is_empty() {
                        // The directory itself: its contents go to dest (dest made like it).
                        picks.push(Pick { src: s, dest: dest_clean.clone() });
                    } else {
                        picks.push(Pick { src: s, dest: format!("{}/{below}", dest_clean.trim_end_matches('/')) });
                    }
                }
            } else {
                if !m.is_empty() && ignored(&tree.rules, m) {
                    return Err(self.bad(pos, format!("{what} {m}: excluded by .dockerignore")));
                }
                let d = if dest_is_dir { format!("{}/{name}", dest_clean.trim_end_matches('/')) } else { dest_clean.clone() };
                picks.push(Pick { src: m.clone(), dest: d });
            }
        }
        let mut hash = hash_picks(tree, &picks, self.epoch).map_err(|m| self.bad(pos, format!("{what}: {m}")))?;
        for ((_, text), d) in docs.iter().zip(&doc_dests) {
            hash.push_str(&format!(" {d}:{}", hex(&Sha256::digest(text.as_bytes()))));
        }
        let shown = format!("{what} {} {dest_clean} chown={:?} chmod={:?} from={:?}", json!(sources), attrs.chown, attrs.chmod, from);
        let key = step_key(&state, &[&shown, &hash]);
        if let Some(hit) = self.cached(&key) {
            self.event(BuildEvent::Cached)?;
            return Ok(hit);
        }
        // The parents of every destination, as the image has them (else 0755 root).
        let mut entries = Vec::new();
        let mut parents: Vec<PathBuf> = picks.iter().filter(|p| !p.dest.is_empty()).filter_map(|p| Path::new(&p.dest).parent().map(Path::to_path_buf)).chain(archives.iter().map(|(_, d)| PathBuf::from(d))).chain(doc_dests.iter().filter_map(|d| Path::new(d).parent().map(Path::to_path_buf))).collect();
        parents.sort();
        parents.dedup();
        let mut seen = std::collections::HashSet::new();
        for p in parents {
            let mut cur = PathBuf::from("/");
            for c in p.components().filter(|c| matches!(c, Component::Normal(_))) {
                cur.push(c);
                if !seen.insert(cur.clone()) {
                    continue;
                }
                let (mode, uid, gid) = match in_layers(&dirs, &cur.to_string_lossy()) {
                    Some((m, u, g, true)) => (m & 0o7777, u, g),
                    Some(_) => return Err(self.bad(pos, format!("{what}: {} is not a directory in the image", cur.display()))),
                    None => (0o755, 0, 0),
                };
                entries.push(PlannedEntry { path: cur.to_string_lossy().trim_start_matches('/').to_string(), kind: Planned::Dir, mode, uid, gid, mtime: self.epoch });
            }
        }
        let picked: Vec<Pick> = picks.into_iter().filter(|p| !p.dest.is_empty()).collect();
        plan_picks(tree, &picked, attrs, &mut entries).map_err(|m| self.bad(pos, format!("{what}: {m}")))?;
        let tmp = TempDir::new("copy")?;
        for (i, (src, dest)) in archives.iter().enumerate() {
            let files = tmp.0.join(format!("archive-{i}"));
            fs::create_dir(&files).map_err(io_err("extract an ADD archive"))?;
            let archive = tree.open_regular(src).map_err(|m| self.bad(pos, format!("ADD {m}")))?;
            extract_archive(archive, dest, &files, attrs.chown, &self.store.limits, &mut entries).map_err(|m| self.bad(pos, format!("ADD {src}: {m}")))?;
        }
        for (i, ((_, text), d)) in docs.iter().zip(&doc_dests).enumerate() {
            let f = tmp.0.join(format!("heredoc-{i}"));
            fs::write(&f, text).map_err(io_err("write a here-document"))?;
            let (uid, gid) = attrs.chown.unwrap_or((0, 0));
            entries.push(PlannedEntry { path: d.trim_start_matches('/').to_string(), kind: Planned::File(FileSource::Path(f), text.len() as u64), mode: attrs.chmod.unwrap_or(0o644), uid, gid, mtime: self.epoch });
        }
        let blob = tmp.0.join("layer.tar.gz");
        let f = fs::File::create(&blob).map_err(io_err("write the step's layer"))?;
        let written = write_planned(entries, self.epoch, io::BufWriter::new(f)).map_err(BuildError::Image)?;
        let by = format!("{what} {} {dest_clean}", sources.join(" "));
        self.add_layer(state, &blob, &written, &key, &by)
    }
}

/// How a step ended, for its error.
fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Exited(c) => format!("exited with status {c}"),
        Verdict::Signaled(s) => format!("was killed by signal {s}"),
        Verdict::TimedOut(_) => "ran out of time (--step-timeout)".into(),
        Verdict::OomKilled => "went over its memory limit and was killed".into(),
        other => format!("ended: {}", other.name()),
    }
}

/// The entries of a local tar archive (plain, gzip or zstd) for ADD, under `dest` (a directory
/// path ending in /); file contents are written to `files` (one file each) for the layer to read.
/// Entries that would leave `dest` (`..`), whiteout names (`.wh.*`, which a layer would apply),
/// device nodes and FIFOs are refused; hardlinks become copies; sizes and counts are bounded.
fn extract_archive(archive: fs::File, dest: &str, files: &Path, chown: Option<(u32, u32)>, limits: &super::Limits, out: &mut Vec<PlannedEntry>) -> Result<(), String> {
    let mut r = io::BufReader::new(archive);
    let head = io::BufRead::fill_buf(&mut r).map_err(|e| e.to_string())?.to_vec();
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(super::gz::GzMembers::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| e.to_string())?)
    } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err("bzip2 and xz archives are not supported (gzip, zstd or plain tar are)".into());
    } else {
        Box::new(r)
    };
    let mut t = tar::Archive::new(reader.take(limits.max_layer_bytes));
    let mut written: std::collections::HashMap<String, (PathBuf, u64)> = std::collections::HashMap::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    for e in t.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| format!("malformed archive: {e}"))?;
        n += 1;
        if n > limits.max_entries {
            return Err(format!("more than {} entries", limits.max_entries));
        }
        let raw = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        let rel = clean(&raw);
        if rel == ".." || rel.starts_with("../") {
            return Err(format!("the entry {raw:?} leads outside the destination"));
        }
        if rel.is_empty() {
            continue;
        }
        if rel.split('/').any(|c| c.starts_with(".wh.")) {
            return Err(format!("the entry {raw:?} has a whiteout name (.wh.), which a layer would apply"));
        }
        let h = e.header();
        let mode = h.mode().map_err(|e| e.to_string())? & 0o7777;
        let (uid, gid) = chown.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let mtime = h.mtime().unwrap_or(0);
        let path = format!("{dest}{rel}").trim_start_matches('/').to_string();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Planned::Dir,
            tar::EntryType::Symlink => Planned::Symlink(e.link_name().map_err(|e| e.to_string())?.ok_or("a symlink without a target")?.into_owned()),
            tar::EntryType::Link => {
                let target = clean(&e.link_name().map_err(|e| e.to_string())?.ok_or("a hardlink without a target")?.to_string_lossy());
                let (p, size) = written.get(&target).cloned().ok_or_else(|| format!("the hardlink {raw:?} names {target:?}, which the archive has not given before"))?;
                Planned::File(FileSource::Path(p), size)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let p = files.join(n.to_string());
                let mut w = fs::File::create(&p).map_err(|e| e.to_string())?;
                let size = io::copy(&mut e, &mut w).map_err(|e| format!("{raw}: {e}"))?;
                bytes += size;
                if bytes > limits.max_layer_bytes {
                    return Err(format!("more than {} bytes", limits.max_layer_bytes));
                }
                written.insert(rel.clone(), (p.clone(), size));
                Planned::File(FileSource::Path(p), size)
            }
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => continue,
            other => return Err(format!("the entry {raw:?} is a {other:?} (a device, FIFO or other special file): not extracted")),
        };
        out.push(PlannedEntry { path, kind, mode, uid, gid, mtime });
    }
    Ok(())
}

fn first_line_of(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Here-documents after a RUN's command (`RUN cat <<EOF > /etc/motd`), which the parser reads
/// only right after the instruction (`RUN <<EOF`). Returns the text with their bodies and
/// terminator lines blanked out (every byte but the newlines made a space, so positions and line
/// numbers stay those of the file), and each such RUN's bodies, by the offset of its keyword:
/// the step gives its command line and the bodies to the shell as one script, as BuildKit does.
/// A line with a custom escape character (`# escape=`), an exec-form command, or a document
/// that never ends (and all after it) is left to the parser.
fn blank_late_heredocs(text: &str) -> (String, BTreeMap<usize, String>) {
    let mut docs = BTreeMap::new();
    let custom_escape = text.lines().take_while(|l| l.trim_start().starts_with('#')).any(|l| {
        let d = l.trim_start()[1..].trim().to_ascii_lowercase();
        d.strip_prefix("escape").map(|r| r.trim_start()).and_then(|r| r.strip_prefix('=')).is_some_and(|v| v.trim() != "\\")
    });
    if custom_escape || !text.contains("<<") {
        return (text.to_string(), docs);
    }
    // Each physical line with its byte offset (the newline excluded).
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut off = 0;
    for l in text.split_inclusive('\n') {
        lines.push((off, l.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(l)));
        off += l.len();
    }
    let mut out = text.as_bytes().to_vec();
    let mut i = 0;
    while i < lines.len() {
        let (start, first) = lines[i];
        let t = first.trim_start();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        // The logical line: continued by a trailing backslash; comment and empty lines inside
        // it are dropped (as the parser does).
        let mut logical = format!("{first}\n");
        let mut j = i;
        let mut continued = first.trim_end().ends_with('\\');
        while continued && j + 1 < lines.len() {
            j += 1;
            let l = lines[j].1;
            let lt = l.trim_start();
            if lt.is_empty() || lt.starts_with('#') {
                continue;
            }
            logical.push_str(l);
            logical.push('\n');
            continued = l.trim_end().ends_with('\\');
        }
        let keyword = start + (first.len() - t.len());
        let mut words = t.split_whitespace();
        let is_run = words.next().is_some_and(|w| w.eq_ignore_ascii_case("RUN"));
        let command_start = words.find(|w| !w.starts_with("--"));
        // Documents the parser reads itself (`RUN <<EOF`, `COPY <<EOF /f`) are skipped whole:
        // their lines are text, not instructions.
        let late = is_run && command_start.is_some_and(|w| !w.starts_with("<<") && !w.starts_with('['));
        let names = heredoc_operators(&logical);
        if names.is_empty() {
            i = j + 1;
            continue;
        }
        // Each document's body runs to its terminator line (tabs stripped for `<<-`).
        let mut k = j + 1;
        let mut complete = true;
        for (name, strip_tabs) in &names {
            loop {
                let Some(&(_, l)) = lines.get(k) else {
                    complete = false;
                    break;
                };
                k += 1;
                let l = if *strip_tabs { l.trim_start_matches('\t') } else { l };
                if l == name {
                    break;
                }
            }
            if !complete {
                break;
            }
        }
        if !complete {
            // A document that never ends leaves the rest to the parser (which reports it): no
            // later line is searched again, so a file of unended documents costs one pass.
            break;
        }
        if !late {
            i = k;
            continue;
        }
        let body_start = lines.get(j + 1).map_or(text.len(), |&(o, _)| o);
        let body_end = lines[k - 1].0 + lines[k - 1].1.len();
        docs.insert(keyword, text[body_start..body_end].to_string());
        for b in &mut out[body_start..body_end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        i = k;
    }
    // Whole lines became ASCII spaces: still UTF-8.
    (String::from_utf8(out).unwrap_or_else(|_| text.to_string()), docs)
}

/// The here-document operators of a shell command line, in order: (name, `<<-`). Quoted text
/// is skipped, and so are `<<<` (a here-string).
fn heredoc_operators(line: &str) -> Vec<(String, bool)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut quote) = (0, None::<u8>);
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q == b'"' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
                i += 1;
                continue;
            }
            None if c == b'\\' => {
                i += 2;
                continue;
            }
            None if c == b'\'' || c == b'"' => {
                quote = Some(c);
                i += 1;
                continue;
            }
            None => {}
        }
        if b[i..].starts_with(b"<<") && !b[i..].starts_with(b"<<<") && (i == 0 || b[i - 1] != b'<') {
            let mut p = i + 2;
            let strip = b.get(p) == Some(&b'-');
            if strip {
                p += 1;
            }
            while b.get(p) == Some(&b' ') || b.get(p) == Some(&b'\t') {
                p += 1;
            }
            let q = b.get(p).copied().filter(|&q| q == b'\'' || q == b'"');
            if q.is_some() {
                p += 1;
            }
            let s = p;
            while p < b.len() && (b[p].is_ascii_alphanumeric() || b[p] == b'_' || b[p] == b'-' || b[p] == b'.') {
                p += 1;
            }
            if p > s && q.is_none_or(|q| b.get(p) == Some(&q)) {
                out.push((line[s..p].to_string(), strip));
                i = p + usize::from(q.is_some());
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The names of the here-documents an instruction's text opens (`<<EOF`, `<<-EOF`,
/// `<<"EOF"`, `<<'EOF'`), in order.
fn heredoc_names(text: &str) -> Vec<String> {
    heredoc_operators(text).into_iter().map(|(name, _)| name).collect()
}

/// Expands `$V` and `${V...}` in a text, nothing else (a here-document's).
fn expand_only(s: &str, vars: &dyn Fn(&str) -> Option<String>, escape: char) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == escape && it.peek() == Some(&'$') {
            out.push('$');
            it.next();
        } else if c == '$' {
            out.push_str(&expand_var(&mut it, vars, escape, 0)?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Whether a file starts like a tar archive (plain, gzip, bzip2, xz or zstd).
fn is_tar(mut f: fs::File) -> bool {
    let mut head = [0u8; 512];
    let n = super::read_full(&mut f, &mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b]) || h.starts_with(b"BZh") || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || (n >= 262 && &h[257..262] == b"ustar")
}

fn instruction_start(i: &Instruction<'_>) -> usize {
    match i {
        Instruction::Add(x) => x.add.span.start,
        Instruction::Arg(x) => x.arg.span.start,
        Instruction::Cmd(x) => x.cmd.span.start,
        Instruction::Copy(x) => x.copy.span.start,
        Instruction::Entrypoint(x) => x.entrypoint.span.start,
        Instruction::Env(x) => x.env.span.start,
        Instruction::Expose(x) => x.expose.span.start,
        Instruction::From(x) => x.from.span.start,
        Instruction::Healthcheck(x) => x.healthcheck.span.start,
        Instruction::Label(x) => x.label.span.start,
        Instruction::Maintainer(x) => x.maintainer.span.start,
        Instruction::Onbuild(x) => x.onbuild.span.start,
        Instruction::Run(x) => x.run.span.start,
        Instruction::Shell(x) => x.shell.span.start,
        Instruction::Stopsignal(x) => x.stopsignal.span.start,
        Instruction::User(x) => x.user.span.start,
        Instruction::Volume(x) => x.volume.span.start,
        Instruction::Workdir(x) => x.workdir.span.start,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_swapped_for_a_symlink_after_planning_is_never_read_through() {
        let t = TempDir::new("swap").unwrap();
        let (ctx, outside) = (t.0.join("ctx"), t.0.join("outside"));
        fs::create_dir_all(ctx.join("d")).unwrap();
        fs::write(ctx.join("d/f"), "inside!").unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("f"), "SECRET!").unwrap(); // the same size
        let tree = Tree::new(ctx.clone(), Vec::new(), "build context").unwrap();
        let (real, _) = tree.check_inside("d/f").unwrap();
        let picks = vec![Pick { src: real, dest: "f".into() }];
        let mut entries = Vec::new();
        plan_picks(&tree, &picks, CopyAttrs::default(), &mut entries).unwrap();
        // Between the plan and the write, the directory becomes a link to elsewhere on the host.
        fs::rename(ctx.join("d"), t.0.join("old-d")).unwrap();
        std::os::unix::fs::symlink(&outside, ctx.join("d")).unwrap();
        match write_planned(entries, 0, io::sink()) {
            Err(ImageError::Invalid(m)) => assert!(m.contains("d/f changed while the layer was written"), "{m}"),
            Err(e) => panic!("not the expected error: {e}"),
            Ok(_) => panic!("the layer was written through the symlink"),
        }
        // The cache hash and a walk refuse it too.
        let e = hash_picks(&tree, &picks, 0).unwrap_err();
        assert!(e.contains("a symlink appeared on the way"), "{e}");
        let mut all = Vec::new();
        assert!(tree.walk("d/f", &mut all, String::new()).is_err());
        // A named source through a link inside the tree is still followed (as Docker does).
        fs::remove_file(ctx.join("d")).unwrap();
        fs::rename(t.0.join("old-d"), ctx.join("real")).unwrap();
        std::os::unix::fs::symlink("real", ctx.join("d")).unwrap();
        assert_eq!(tree.check_inside("d/f").unwrap().0, "real/f");
    }

    #[test]
    fn late_heredocs_are_blanked_and_kept_in_place() {
        let text = "FROM x\nRUN cat <<EOF > /f \\\n  # a comment\n  && cat <<-'T' | tr a b\nbody $A\nEOF\n\tmore\n\tT\nRUN echo done\n";
        let (blanked, docs) = blank_late_heredocs(text);
        assert_eq!(blanked.len(), text.len());
        assert_eq!(blanked.lines().count(), text.lines().count());
        let keyword = text.find("RUN cat").unwrap();
        assert_eq!(docs.get(&keyword).map(String::as_str), Some("body $A\nEOF\n\tmore\n\tT"));
        assert_eq!(blanked.lines().nth(4), Some("       "));
        assert!(blanked.ends_with("\n   \n     \n  \nRUN echo done\n"), "{blanked:?}");
        // Left alone: a document first (the parser's own), exec form, another instruction, a
        // document that never ends, a here-string, quoted text, a custom escape character.
        for t in [
            "FROM x\nRUN <<EOF sh\nbody\nEOF\n",
            "FROM x\nRUN [\"cat\"] <<EOF\nbody\nEOF\n",
            "FROM x\nCOPY <<EOF /f\nbody\nEOF\n",
            "FROM x\nRUN cat <<EOF\nbody\n",
            "FROM x\nRUN cat <<<word\n",
            "FROM x\nRUN echo '<<EOF' \"<<EOF\"\n",
            "# escape=`\nFROM x\nRUN cat <<EOF\nbody\nEOF\n",
            "FROM x\nCOPY <<EOF /s\nRUN cat <<X > f\nx\nX\nEOF\n",
            "FROM x\nRUN <<EOF sh\nRUN cat <<X\nX\nEOF\n",
            // After a document that never ends, nothing more is read.
            "FROM x\nRUN a <<NEVER\nRUN cat <<Y > f\nb\nY\n",
        ] {
            let (b, d) = blank_late_heredocs(t);
            assert!(d.is_empty() && b == t, "{t:?}");
        }
        assert_eq!(heredoc_operators("cat <<A <<-\"B\" <<< c 'x<<D' x<< E\n"), [("A".into(), false), ("B".into(), true), ("E".into(), false)]);
    }

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("one".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn words_expand_and_unquote_like_a_dockerfile() {
        assert_eq!(words("$A ${A}x '$A' \"$A b\"", &vars, '\\').unwrap(), ["one", "onex", "$A", "one b"]);
        assert_eq!(words("${B:-dflt} ${A:+alt} ${E:-e} ${B:+no}", &vars, '\\').unwrap(), ["dflt", "alt", "e"]);
        assert_eq!(words(r"a\ b \$A", &vars, '\\').unwrap(), ["a b", "$A"]);
        assert_eq!(words("`$A", &vars, '`').unwrap(), ["$A"]);
        assert!(words("'open", &vars, '\\').is_err());
        assert!(words("${B:?needed}", &vars, '\\').unwrap_err().contains("needed"));
        // Nesting is bounded (each level is a recursion): an error, not a stack overflow.
        let nested = format!("{}x{}", "${B:-".repeat(100_000), "}".repeat(100_000));
        assert!(words(&nested, &vars, '\\').unwrap_err().contains("nested more than"));
        assert_eq!(words("${B:-${C:-${A}}}", &vars, '\\').unwrap(), ["one"]);
    }

    #[test]
    fn env_and_label_pairs_in_both_forms() {
        assert_eq!(pairs("K=v K2=\"a b\" K3=$A", &vars, '\\', true).unwrap(), [("K".into(), Some("v".into())), ("K2".into(), Some("a b".into())), ("K3".into(), Some("one".into()))]);
        assert_eq!(pairs("K the rest $A", &vars, '\\', true).unwrap(), [("K".into(), Some("the rest one".into()))]);
        assert_eq!(pairs("V W=2", &vars, '\\', false).unwrap(), [("V".into(), None), ("W".into(), Some("2".into()))]);
        assert!(pairs("=x", &vars, '\\', true).is_err());
    }

    #[test]
    fn dockerignore_globs_with_exceptions() {
        let rules: Vec<IgnoreRule> = ["*.log", "build/**", "!build/keep.txt", "**/secret", "/tmp?"].iter().map(|p| {
            let (include, p) = p.strip_prefix('!').map_or((false, *p), |p| (true, p));
            IgnoreRule { parts: clean(p).split('/').map(str::to_string).collect(), include }
        }).collect();
        assert!(ignored(&rules, "a.log"));
        assert!(!ignored(&rules, "src/a.log"), "* does not cross /");
        assert!(ignored(&rules, "build/x/y"));
        assert!(!ignored(&rules, "build/keep.txt"));
        assert!(ignored(&rules, "deep/down/secret"));
        assert!(ignored(&rules, "secret/inside"), "a matched directory takes what is below it");
        assert!(ignored(&rules, "tmp1") && !ignored(&rules, "tmp12"));
        assert!(!ignored(&rules, "src/main.rs"));
        assert!(glob_component(&"[a-c]x".chars().collect::<Vec<_>>(), &"bx".chars().collect::<Vec<_>>()));
        assert!(glob_component(&"a\\*[x".chars().collect::<Vec<_>>(), &"a*[x".chars().collect::<Vec<_>>()), "an escape and an unclosed [ are literals");
        // Patterns that backtrack exponentially in a naive matcher answer at once.
        let many: Vec<char> = "*a".repeat(30).chars().chain("*b".chars()).collect();
        assert!(!glob_component(&many, &"a".repeat(200).chars().collect::<Vec<_>>()));
        let deep = IgnoreRule { parts: std::iter::repeat_n("**".to_string(), 40).chain(["x".to_string()]).collect(), include: false };
        assert!(!ignored(&[deep], &vec!["d"; 200].join("/")));
        assert!(!glob_component(&"[!a-c]x".chars().collect::<Vec<_>>(), &"bx".chars().collect::<Vec<_>>()));
    }

    #[test]
    fn clean_paths_and_dates() {
        assert_eq!(clean("./a/../b//c/."), "b/c");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("a/../../x"), "../x");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
