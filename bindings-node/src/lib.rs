//! The native addon of the `cagette` npm package: a thin layer over the Rust library.
//!
//! The sandbox description crosses the boundary as the core's `SandboxSpec` in JSON (the JS
//! layer only renames camelCase keys), so no option is declared twice. Waiting never happens on
//! the JS thread nor on libuv's small thread pool: each running sandbox gets a thread of its own
//! that resolves a promise when the sandbox ends.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Errors carry a JSON payload in their message: `{"kind": ..., ...}`; lib/index.js turns them
/// into JS errors with documented `code`s.
fn err(kind: &str, mut payload: serde_json::Value) -> Error {
    payload["kind"] = serde_json::Value::String(kind.to_string());
    Error::new(Status::GenericFailure, payload.to_string())
}

fn to_napi_err(e: cagette::Error) -> Error {
    let (kind, payload) = e.binding_payload();
    err(kind, payload)
}

fn parse_spec(spec_json: &str) -> Result<cagette::SandboxSpec> {
    cagette::SandboxSpec::from_json(spec_json).map_err(|e| {
        let (kind, payload) = e.binding_payload();
        err(kind, payload)
    })
}

fn report_json(o: &cagette::Outcome) -> String {
    serde_json::to_string(&cagette::Report::new(&o.verdict, &o.usage)).unwrap_or_default()
}

/// What `output()` resolves to.
#[napi(object)]
pub struct NativeOutput {
    /// The report (same JSON as `cagette run --report`).
    pub report: String,
    /// Captured standard output, when it was piped.
    pub stdout: Option<Buffer>,
    /// Captured standard error, when it was piped.
    pub stderr: Option<Buffer>,
}

/// A running sandbox.
#[napi]
pub struct NativeChild {
    child: Arc<Mutex<Option<cagette::Child>>>,
    pid: i32,
    /// Our own pidfd (a dup), so `kill` never uses a closed or reused fd number; released by
    /// `release()` once the job has ended.
    pidfd: Mutex<Option<OwnedFd>>,
}

#[napi]
impl NativeChild {
    /// Host pid of the sandbox's init.
    #[napi(getter)]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Hands the piped standard streams' fds to JS (stdin, stdout, stderr; null when not piped).
    /// The caller owns them afterwards.
    #[napi]
    pub fn take_stdio(&self) -> Vec<Option<i32>> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(c) => vec![
                c.stdin.take().map(|f| f.into_raw_fd()),
                c.stdout.take().map(|f| f.into_raw_fd()),
                c.stderr.take().map(|f| f.into_raw_fd()),
            ],
            None => vec![None, None, None],
        }
    }

    /// Waits on a thread of its own; resolves with the report JSON.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn wait<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (deferred, promise) = env.create_deferred()?;
        let child = self.child.clone();
        std::thread::Builder::new()
            .name("cagette-wait".into())
            .spawn(move || {
                let mut guard = child.lock().unwrap_or_else(|e| e.into_inner());
                let r = match guard.as_mut() {
                    Some(c) => c.wait().map(|o| report_json(&o)).map_err(to_napi_err),
                    None => Err(err("error", serde_json::json!({"message": "the sandbox was already released"}))),
                };
                // Release fds and the cgroup now, not when JS collects the object.
                guard.take();
                drop(guard);
                match r {
                    Ok(json) => deferred.resolve(move |_| Ok(json)),
                    Err(e) => deferred.reject(e),
                }
            })
            .map_err(|e| Error::new(Status::GenericFailure, format!("start a wait thread: {e}")))?;
        Ok(promise)
    }

    /// Releases what is left (the pidfd; the sandbox itself is released when it ends). Call
    /// once the job has ended; `kill` is a no-op afterwards.
    #[napi]
    pub fn release(&self) {
        self.pidfd.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Sends a signal to the sandbox's init (forwarded to the payload; SIGKILL kills the tree).
    /// Works while another thread waits.
    #[napi]
    pub fn kill(&self, signal: i32) -> Result<()> {
        let guard = self.pidfd.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = guard.as_ref() else { return Ok(()) }; // released: it has ended
        if let Err(e) = cagette::send_signal(fd.as_fd(), signal)
            && e.raw_os_error() != Some(libc::ESRCH) {
            return Err(err("error", serde_json::json!({"message": format!("send signal {signal} to the sandbox: {e}")})));
        }
        Ok(())
    }
}

/// A job run entirely off the JS thread: spawned, fed, collected and waited for on a thread of
/// its own (what `run()` uses).
#[napi]
pub struct NativeRun {
    spec: Mutex<Option<cagette::SandboxSpec>>,
    /// The job's pidfd once spawned; a signal asked for before that, kept for then.
    state: Arc<Mutex<RunState>>,
}

#[derive(Default)]
struct RunState {
    pidfd: Option<OwnedFd>,
    pending_signal: Option<i32>,
    done: bool,
}

fn send(fd: &OwnedFd, signal: i32) {
    let _ = cagette::send_signal(fd.as_fd(), signal);
}

#[napi]
impl NativeRun {
    /// Starts the job and resolves with its report and captured output. Call once.
    #[napi(ts_return_type = "Promise<NativeOutput>")]
    pub fn output<'env>(&self, env: &'env Env, input: Option<Buffer>) -> Result<Object<'env>> {
        let spec = self.spec.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| err("error", serde_json::json!({"message": "output() was already called"})))?;
        let (deferred, promise) = env.create_deferred()?;
        let state = self.state.clone();
        let input: Option<Vec<u8>> = input.map(|b| b.to_vec());
        std::thread::Builder::new()
            .name("cagette-run".into())
            .spawn(move || {
                let r = (|| {
                    let mut child = cagette::Sandbox::from_spec(spec).spawn().map_err(to_napi_err)?;
                    {
                        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                        let fd = child.pidfd().try_clone_to_owned().map_err(|e| Error::new(Status::GenericFailure, format!("duplicate the sandbox's pidfd: {e}")))?;
                        if let Some(sig) = st.pending_signal.take() {
                            send(&fd, sig);
                        }
                        st.pidfd = Some(fd);
                    }
                    // With a terminal (tty), stdout is what the command printed on it.
                    let piped = (child.stdout.is_some() || child.pty.is_some(), child.stderr.is_some());
                    let (out, errb) = child.communicate(input.as_deref().or(Some(&[]))).map_err(to_napi_err)?;
                    let o = child.wait().map_err(to_napi_err)?;
                    Ok((report_json(&o), piped, out, errb))
                })();
                {
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    st.pidfd = None;
                    st.done = true;
                }
                match r {
                    Ok((report, (po, pe), out, errb)) => deferred.resolve(move |_| Ok(NativeOutput { report, stdout: po.then(|| out.into()), stderr: pe.then(|| errb.into()) })),
                    Err(e) => deferred.reject(e),
                }
            })
            .map_err(|e| Error::new(Status::GenericFailure, format!("start a run thread: {e}")))?;
        Ok(promise)
    }

    /// Sends a signal to the job (kept for when it starts, if it has not yet); a no-op once it
    /// has ended.
    #[napi]
    pub fn kill(&self, signal: i32) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &st.pidfd {
            Some(fd) => send(fd, signal),
            None if !st.done => st.pending_signal = Some(signal),
            None => {}
        }
    }
}

/// Prepares a job from a JSON `SandboxSpec` (checked now: a bad option throws here).
#[napi]
pub fn start_run(spec_json: String) -> Result<NativeRun> {
    let spec = parse_spec(&spec_json)?;
    Ok(NativeRun { spec: Mutex::new(Some(spec)), state: Arc::new(Mutex::new(RunState::default())) })
}

/// Starts a sandbox from a JSON `SandboxSpec` (synchronously, like child_process.spawn: it
/// returns once the command was executed, in about as long).
#[napi]
pub fn spawn(spec_json: String) -> Result<NativeChild> {
    let spec = parse_spec(&spec_json)?;
    let child = cagette::Sandbox::from_spec(spec).spawn().map_err(to_napi_err)?;
    let pidfd = child.pidfd().try_clone_to_owned().map_err(|e| Error::new(Status::GenericFailure, format!("duplicate the sandbox's pidfd: {e}")))?;
    let pid = child.pid();
    Ok(NativeChild { child: Arc::new(Mutex::new(Some(child))), pid, pidfd: Mutex::new(Some(pidfd)) })
}

/// Image store operations, on a thread of their own (imports can take long): `op` is import,
/// list, get, remove, gc or unpack; resolves with JSON.
#[napi(ts_return_type = "Promise<string>")]
pub fn image<'env>(env: &'env Env, op: String, store_dir: Option<String>, a: Option<String>, b: Option<String>) -> Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred()?;
    std::thread::Builder::new()
        .name("cagette-image".into())
        .spawn(move || {
            let r = (|| -> std::result::Result<serde_json::Value, cagette::ImageError> {
                let dir = store_dir.map(std::path::PathBuf::from).unwrap_or_else(cagette::ImageStore::default_dir);
                let st = cagette::ImageStore::open(dir)?;
                let a = a.unwrap_or_default();
                let b = b.unwrap_or_default();
                Ok(match op.as_str() {
                    "import" => serde_json::to_value(st.import(std::path::Path::new(&a), &b)?).unwrap_or_default(),
                    "list" => serde_json::to_value(st.list()?).unwrap_or_default(),
                    "get" => serde_json::to_value(st.get(&a)?).unwrap_or_default(),
                    "remove" => st.remove(&a).map(|_| serde_json::Value::Null)?,
                    "gc" => serde_json::to_value(st.gc()?).unwrap_or_default(),
                    "unpack" => st.unpack(&a, std::path::Path::new(&b)).map(|_| serde_json::Value::Null)?,
                    other => serde_json::json!({"unknown_op": other}),
                })
            })();
            match r {
                Ok(v) => deferred.resolve(move |_| Ok(v.to_string())),
                Err(e) => deferred.reject(err("image", serde_json::json!({"message": e.to_string()}))),
            }
        })
        .map_err(|e| Error::new(Status::GenericFailure, format!("start an image thread: {e}")))?;
    Ok(promise)
}

/// One image import, with progress to poll and a cancel flag (the JS side polls `progress()`
/// for `onProgress` and calls `cancel()` on its AbortSignal: no JS runs off the main thread).
#[napi]
pub struct NativeImport {
    args: Mutex<Option<(Option<String>, bool, Work)>>,
    progress: Arc<Mutex<[f64; 4]>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

#[napi]
impl NativeImport {
    /// Starts the import on a thread of its own; resolves with the ImageInfo as JSON. Once.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn run<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (store_dir, keep_blobs, work) = self.args.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| err("error", serde_json::json!({"message": "run() was already called"})))?;
        let (deferred, promise) = env.create_deferred()?;
        let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
        std::thread::Builder::new()
            .name("cagette-import".into())
            .spawn(move || {
                let r = (|| -> std::result::Result<String, cagette::ImageError> {
                    let dir = store_dir.map(std::path::PathBuf::from).unwrap_or_else(cagette::ImageStore::default_dir);
                    let st = cagette::ImageStore::open(dir)?.keep_blobs(keep_blobs);
                    let mut cb = |p: &cagette::ImportProgress| {
                        *progress.lock().unwrap_or_else(|e| e.into_inner()) = [p.layers as f64, p.layers_done as f64, p.bytes as f64, p.bytes_done as f64];
                        if cancel.load(std::sync::atomic::Ordering::SeqCst) { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
                    };
                    let info = match work {
                        Work::Import { source, name } => st.import_with(std::path::Path::new(&source), &name, &mut cb)?,
                        Work::Pull { reference, options } => st.pull_with(&reference, &options, &mut cb)?,
                    };
                    Ok(serde_json::to_string(&info).unwrap_or_default())
                })();
                match r {
                    Ok(v) => deferred.resolve(move |_| Ok(v)),
                    Err(e) => deferred.reject(err("image", serde_json::json!({"message": e.to_string()}))),
                }
            })
            .map_err(|e| Error::new(Status::GenericFailure, format!("start an import thread: {e}")))?;
        Ok(promise)
    }

    /// The last progress: [layers, layersDone, bytes, bytesDone].
    #[napi]
    pub fn progress(&self) -> Vec<f64> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).to_vec()
    }

    /// Cancels the import (it rejects with "import cancelled"; nothing stays in the store).
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a [`NativeImport`] does.
enum Work {
    Import { source: String, name: String },
    Pull { reference: String, options: cagette::PullOptions },
}

fn job(store_dir: Option<String>, keep_blobs: bool, work: Work) -> NativeImport {
    NativeImport { args: Mutex::new(Some((store_dir, keep_blobs, work))), progress: Arc::new(Mutex::new([0.0; 4])), cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)) }
}

/// An import to `run()`; `keep_blobs` keeps the manifest, config and compressed layers too.
#[napi]
pub fn start_import(store_dir: Option<String>, source: String, name: String, keep_blobs: Option<bool>) -> NativeImport {
    job(store_dir, keep_blobs.unwrap_or(false), Work::Import { source, name })
}

/// A pull to `run()`. `options` is JSON: platform, insecureRegistries, caFiles, credentials
/// ([user, password]), authFile, timeout (ms); `keep_blobs` as for an import.
#[napi]
pub fn start_pull(store_dir: Option<String>, reference: String, options: String, keep_blobs: Option<bool>) -> Result<NativeImport> {
    let opts = cagette::PullOptions::from_binding_json(&options, std::time::Duration::from_millis(1)).map_err(|m| err("spec_value", serde_json::json!({"message": m})))?;
    Ok(job(store_dir, keep_blobs.unwrap_or(false), Work::Pull { reference, options: opts }))
}

/// A build event as JS polls it: kind "step" (n, total, line, text: the instruction), "cached",
/// or "done" (text: the manifest digest).
#[napi(object)]
pub struct NativeBuildEvent {
    pub kind: String,
    pub n: u32,
    pub total: u32,
    pub line: u32,
    pub text: String,
}

/// One image build, with its events to take and a cancel flag (as [`NativeImport`]: the JS
/// side polls `takeEvents()` for `onProgress` and calls `cancel()` on its AbortSignal).
#[napi]
pub struct NativeBuild {
    args: Mutex<Option<(Option<String>, String, cagette::BuildOptions)>>,
    events: Arc<Mutex<Vec<NativeBuildEvent>>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

#[napi]
impl NativeBuild {
    /// Starts the build on a thread of its own; resolves with the ImageInfo as JSON. Once.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn run<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (store_dir, context, mut opts) = self.args.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| err("error", serde_json::json!({"message": "run() was already called"})))?;
        let (deferred, promise) = env.create_deferred()?;
        let (events, cancel) = (self.events.clone(), self.cancel.clone());
        // The core watches the flag too: a running RUN step is killed at once.
        opts.cancel = Some(cancel.clone());
        std::thread::Builder::new()
            .name("cagette-build".into())
            .spawn(move || {
                let r = (|| -> std::result::Result<String, cagette::BuildError> {
                    let dir = store_dir.map(std::path::PathBuf::from).unwrap_or_else(cagette::ImageStore::default_dir);
                    let st = cagette::ImageStore::open(dir)?;
                    let push = |kind: &str, n: usize, total: usize, line: usize, text: &str| {
                        let c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
                        events.lock().unwrap_or_else(|e| e.into_inner()).push(NativeBuildEvent { kind: kind.into(), n: c(n), total: c(total), line: c(line), text: text.into() });
                    };
                    let info = st.build(std::path::Path::new(&context), &opts, &mut |e| {
                        // Cancelled: this step does not start (and is not reported).
                        let cancelled = cancel.load(std::sync::atomic::Ordering::SeqCst);
                        match e {
                            cagette::BuildEvent::Step { .. } | cagette::BuildEvent::Cached if cancelled => return std::ops::ControlFlow::Break(()),
                            cagette::BuildEvent::Step { n, total, line, text } => push("step", *n, *total, *line, text),
                            cagette::BuildEvent::Cached => push("cached", 0, 0, 0, ""),
                            cagette::BuildEvent::Pulling(r) => push("pulling", 0, 0, 0, r),
                            // The image is recorded: too late to cancel.
                            cagette::BuildEvent::Done(manifest) => push("done", 0, 0, 0, manifest),
                            _ => {}
                        }
                        std::ops::ControlFlow::Continue(())
                    })?;
                    Ok(serde_json::to_string(&info).unwrap_or_default())
                })();
                match r {
                    Ok(v) => deferred.resolve(move |_| Ok(v)),
                    Err(e) => deferred.reject(build_err(e)),
                }
            })
            .map_err(|e| Error::new(Status::GenericFailure, format!("start a build thread: {e}")))?;
        Ok(promise)
    }

    /// The events since the last call, oldest first.
    #[napi]
    pub fn take_events(&self) -> Vec<NativeBuildEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Cancels the build (it rejects with reason "cancelled"; nothing is tagged): a running RUN
    /// step is killed with its sandbox.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A build error for lib/index.js: kind "build", the message (the failed RUN step's output in
/// it) and what it is about. `reason` is parse, instruction, step, sandbox, image, io,
/// cancelled or other (`BuildError::binding_payload`).
fn build_err(e: cagette::BuildError) -> Error {
    err("build", e.binding_payload(&js_words))
}

/// The core's build messages name the CLI's flags; here they are options.
fn js_words(s: &str) -> String {
    [("(`--keep-blobs`)", "(keepBlobs: true)"), ("(`--pull missing`)", "(pull: true)"), ("(--step-timeout)", "(stepTimeout)")].iter().fold(s.to_string(), |s, (cli, js)| s.replacen(cli, js, 1))
}

/// A build to `run()`: the Dockerfile (default CONTEXT/Dockerfile) and `context` directory into
/// the store. `options` is the JSON of `cagette::BuildOptions::from_binding_json` (camelCase
/// keys, `stepTimeout` in ms, `pull`: true or pull options); a bad one throws here.
#[napi]
pub fn start_build(store_dir: Option<String>, context: String, options: String) -> Result<NativeBuild> {
    let o = cagette::BuildOptions::from_binding_json(&options, std::time::Duration::from_millis(1)).map_err(|e| err("spec_value", serde_json::json!({"message": e.to_string()})))?;
    Ok(NativeBuild { args: Mutex::new(Some((store_dir, context, o))), events: Arc::new(Mutex::new(Vec::new())), cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)) })
}

/// The caller's running named sandboxes, as JSON.
#[napi]
pub fn list_sandboxes() -> Result<String> {
    let l = cagette::list_sandboxes().map_err(|e| err("error", serde_json::json!({"message": e.to_string()})))?;
    serde_json::to_string(&l).map_err(|e| err("error", serde_json::json!({"message": e.to_string()})))
}

/// Stores registry credentials in a containers auth.json; returns the file's path.
#[napi]
pub fn login(registry: String, username: String, password: String, auth_file: Option<String>) -> Result<String> {
    cagette::login(&registry, &username, &password, auth_file.as_deref().map(std::path::Path::new)).map(|p| p.display().to_string()).map_err(|e| err("image", serde_json::json!({"message": e.to_string()})))
}

/// Checks a JSON `SandboxSpec`; returns it complete (defaults filled in).
#[napi]
pub fn validate(spec_json: String) -> Result<String> {
    let spec = parse_spec(&spec_json)?;
    serde_json::to_string(&spec).map_err(|e| err("error", serde_json::json!({"message": e.to_string()})))
}

/// What this host supports, as JSON.
#[napi]
pub fn probe() -> String {
    serde_json::to_string(&cagette::probe()).unwrap_or_default()
}
