//! The native part of the `cagette` Python module: a thin layer over the Rust library.
//!
//! The sandbox description crosses the boundary as the core's own `SandboxSpec` in JSON, so no
//! option is declared twice: a new field in the core is usable from Python at once, and unknown
//! keys or bad values are reported by the same serde code the CLI uses. The pure-Python layer
//! (python/cagette/__init__.py) gives it a `subprocess`-shaped API.

use pyo3::prelude::*;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

pyo3::create_exception!(cagette, NativeError, pyo3::exceptions::PyException, "Raised by the native layer; the Python layer turns it into cagette's own exceptions. args: (kind, payload_json).");

fn native_err(kind: &str, payload: serde_json::Value) -> PyErr {
    NativeError::new_err((kind.to_string(), payload.to_string()))
}

fn to_py_err(e: cagette::Error) -> PyErr {
    let (kind, payload) = e.binding_payload();
    native_err(kind, payload)
}

fn parse_spec(spec_json: &str) -> PyResult<cagette::SandboxSpec> {
    cagette::SandboxSpec::from_json(spec_json).map_err(|e| {
        let (kind, payload) = e.binding_payload();
        native_err(kind, payload)
    })
}

/// The outcome as the report's one flat JSON shape (the same as `cagette run --report`).
fn outcome_json(o: &cagette::Outcome) -> String {
    serde_json::to_string(&cagette::Report::new(&o.verdict, &o.usage)).unwrap_or_default()
}

/// A running sandbox. Waiting releases the GIL; `kill` works from any thread, also while
/// another thread waits.
#[pyclass(module = "cagette._native")]
struct NativeChild {
    child: Mutex<Option<cagette::Child>>,
    pid: i32,
    /// Our own pidfd (a dup), so `kill` never uses a closed or reused fd number; released by
    /// `close()`.
    pidfd: Mutex<Option<OwnedFd>>,
}

#[pymethods]
impl NativeChild {
    /// Host pid of the sandbox's init.
    #[getter]
    fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the sandbox's init (readable when it ended), valid while this object lives.
    #[getter]
    fn pidfd(&self) -> i32 {
        self.pidfd.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Waits up to `timeout` seconds (None: until the end). Returns the outcome as JSON, or None
    /// when the time ran out.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        let limit = match timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => return Err(pyo3::exceptions::PyValueError::new_err(format!("timeout must be a non-negative number of seconds, got {t}"))),
            // Beyond what a Duration holds (1e20 s): as good as no limit, as subprocess takes it
            // (still a timed wait: stdin stays open, unlike wait() without a timeout).
            Some(t) => Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX)),
            None => None,
        };
        py.detach(|| {
            let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let child = guard.as_mut().ok_or_else(|| native_err("error", serde_json::json!({"message": "the sandbox was already released"})))?;
            let r = match limit {
                Some(d) => child.wait_timeout(d),
                None => child.wait().map(Some),
            };
            r.map(|o| o.map(|o| outcome_json(&o))).map_err(to_py_err)
        })
    }

    /// The outcome as JSON if the sandbox has ended, else None. Never blocks: while another
    /// thread waits for the sandbox (and holds it), None, as subprocess's poll() gives.
    fn try_wait(&self, py: Python<'_>) -> PyResult<Option<String>> {
        py.detach(|| {
            let mut guard = match self.child.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            };
            match guard.as_mut() {
                Some(c) => c.try_wait().map(|o| o.map(|o| outcome_json(&o))).map_err(to_py_err),
                None => Ok(None),
            }
        })
    }

    /// Sends a signal to the sandbox's init (forwarded to the payload; SIGKILL kills the tree).
    fn kill(&self, signal: i32) -> PyResult<()> {
        // Not through the mutex: a waiting thread holds it.
        let guard = self.pidfd.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = guard.as_ref() else { return Ok(()) }; // closed: it has ended
        if let Err(e) = cagette::send_signal(fd.as_fd(), signal)
            && e.raw_os_error() != Some(libc::ESRCH) {
            return Err(native_err("error", serde_json::json!({"message": format!("send signal {signal} to the sandbox: {e}")})));
        }
        Ok(())
    }

    /// Kills the sandbox if it still runs and releases everything (also done when collected).
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let c = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(c);
            self.pidfd.lock().unwrap_or_else(|e| e.into_inner()).take();
        })
    }
}

/// Starts a sandbox from a JSON `SandboxSpec`. The GIL is released while it starts.
#[pyfunction]
fn spawn(py: Python<'_>, spec_json: &str) -> PyResult<NativeChild> {
    let spec = parse_spec(spec_json)?;
    let child = py.detach(|| cagette::Sandbox::from_spec(spec).spawn()).map_err(to_py_err)?;
    let pidfd = child.pidfd().try_clone_to_owned().map_err(|e| native_err("error", serde_json::json!({"message": format!("duplicate the sandbox's pidfd: {e}")})))?;
    let pid = child.pid();
    Ok(NativeChild { child: Mutex::new(Some(child)), pid, pidfd: Mutex::new(Some(pidfd)) })
}

/// Runs a sandbox that has a terminal of its own (`tty`), to the end, with the GIL released:
/// with `capture`, what it prints on its terminal is returned (and `input` typed into it);
/// otherwise its terminal is connected to this process's own (our stdin forwarded when
/// `forward_input`, in raw mode while it runs). Returns (report JSON, captured output).
#[pyfunction]
#[pyo3(signature = (spec_json, capture, forward_input, input=None))]
fn run_tty(py: Python<'_>, spec_json: &str, capture: bool, forward_input: bool, input: Option<Vec<u8>>) -> PyResult<(String, Vec<u8>)> {
    let mut spec = parse_spec(spec_json)?;
    spec.tty = true;
    py.detach(|| {
        let mut child = cagette::Sandbox::from_spec(spec).spawn()?;
        if capture {
            let (out, _) = child.communicate(input.as_deref().or(Some(&[])))?;
            let o = child.wait()?;
            Ok((outcome_json(&o), out))
        } else {
            let o = child.interact(forward_input, None)?;
            Ok((outcome_json(&o), Vec::new()))
        }
    })
    .map_err(to_py_err)
}

/// Checks a JSON `SandboxSpec` and returns it normalized (defaults filled in).
#[pyfunction]
fn validate(spec_json: &str) -> PyResult<String> {
    let spec = parse_spec(spec_json)?;
    serde_json::to_string(&spec).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))
}

fn image_err(e: cagette::ImageError) -> PyErr {
    native_err("image", serde_json::json!({ "message": e.to_string() }))
}

fn store(dir: Option<&str>) -> PyResult<cagette::ImageStore> {
    let d = dir.map(std::path::PathBuf::from).unwrap_or_else(cagette::ImageStore::default_dir);
    cagette::ImageStore::open(d).map_err(image_err)
}

/// Image store operations (GIL released). `op` is import, list, get, remove, gc or unpack;
/// returns JSON.
#[pyfunction]
#[pyo3(signature = (op, store_dir=None, a=None, b=None))]
fn image(py: Python<'_>, op: &str, store_dir: Option<&str>, a: Option<&str>, b: Option<&str>) -> PyResult<String> {
    let (a, b) = (a.map(str::to_string), b.map(str::to_string));
    let op = op.to_string();
    let store_dir = store_dir.map(str::to_string);
    py.detach(move || -> PyResult<String> {
        let st = store(store_dir.as_deref())?;
        let a_ = || a.clone().ok_or_else(|| pyo3::exceptions::PyTypeError::new_err(format!("{op} needs an image name or path")));
        let v = match op.as_str() {
            "import" => serde_json::to_value(st.import(std::path::Path::new(&a_()?), &b.clone().ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("import needs a name"))?).map_err(image_err)?),
            "list" => serde_json::to_value(st.list().map_err(image_err)?),
            "get" => serde_json::to_value(st.get(&a_()?).map_err(image_err)?),
            "remove" => st.remove(&a_()?).map(|_| serde_json::Value::Null).map_err(image_err).map(Ok)?,
            "gc" => serde_json::to_value(st.gc().map_err(image_err)?),
            "unpack" => st.unpack(&a_()?, std::path::Path::new(&b.clone().ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("unpack needs a destination"))?)).map(|_| serde_json::Value::Null).map_err(image_err).map(Ok)?,
            other => return Err(pyo3::exceptions::PyValueError::new_err(format!("unknown image operation {other:?}"))),
        };
        v.map(|v| v.to_string()).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))
    })
}

/// Calls a progress callback with the GIL (from the thread that works with it released): an
/// exception in it, or a pending signal (Ctrl-C), is kept in `raised` and the work cancelled; a
/// return of exactly `False` cancels too.
fn call_progress(raised: &mut Option<PyErr>, progress: &Option<Py<PyAny>>, args: impl for<'py> pyo3::call::PyCallArgs<'py>) -> std::ops::ControlFlow<()> {
    Python::attach(|py| {
        if let Err(e) = py.check_signals() {
            *raised = Some(e);
            return std::ops::ControlFlow::Break(());
        }
        if let Some(cb) = progress {
            match cb.call1(py, args) {
                Ok(v) if v.bind(py).is(pyo3::types::PyBool::new(py, false)) => return std::ops::ControlFlow::Break(()),
                Ok(_) => {}
                Err(e) => {
                    *raised = Some(e);
                    return std::ops::ControlFlow::Break(());
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })
}

/// Runs an import or a pull (GIL released), calling `progress(layers, layers_done, bytes,
/// bytes_done)` with the GIL about ten times a second (see [`call_progress`]: a return of
/// `False`, an exception in it or Ctrl-C cancels; the exception is then raised). Returns the
/// ImageInfo as JSON.
fn with_progress(
    py: Python<'_>,
    store_dir: Option<String>,
    keep_blobs: bool,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&cagette::ImageStore, &mut dyn FnMut(&cagette::ImportProgress) -> std::ops::ControlFlow<()>) -> Result<cagette::ImageInfo, cagette::ImageError> + Send,
) -> PyResult<String> {
    let mut raised: Option<PyErr> = None;
    let r = py.detach(|| -> PyResult<_> {
        let st = store(store_dir.as_deref())?.keep_blobs(keep_blobs);
        Ok(work(&st, &mut |p| call_progress(&mut raised, &progress, (p.layers, p.layers_done, p.bytes, p.bytes_done))))
    })?;
    if let Some(e) = raised {
        return Err(e);
    }
    let info = r.map_err(image_err)?;
    serde_json::to_string(&info).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))
}

/// Imports an image (see [`with_progress`]).
#[pyfunction]
#[pyo3(signature = (store_dir, source, name, progress=None, keep_blobs=false))]
fn image_import(py: Python<'_>, store_dir: Option<&str>, source: &str, name: &str, progress: Option<Py<PyAny>>, keep_blobs: bool) -> PyResult<String> {
    let (source, name) = (source.to_string(), name.to_string());
    with_progress(py, store_dir.map(str::to_string), keep_blobs, progress, move |st, cb| st.import_with(std::path::Path::new(&source), &name, cb))
}

/// Pulls an image from a registry (see [`with_progress`]). `options` is JSON: platform,
/// insecure_registries, ca_files, credentials ([user, password]), auth_file, timeout (s).
#[pyfunction]
#[pyo3(signature = (store_dir, reference, options, progress=None, keep_blobs=false))]
fn image_pull(py: Python<'_>, store_dir: Option<&str>, reference: &str, options: &str, progress: Option<Py<PyAny>>, keep_blobs: bool) -> PyResult<String> {
    // A value of the wrong type is a TypeError, a bad timeout a ValueError (as before).
    let opts = cagette::PullOptions::from_binding_json(options, std::time::Duration::from_secs(1))
        .map_err(|m| if m.starts_with("pull options:") { pyo3::exceptions::PyTypeError::new_err(m) } else { pyo3::exceptions::PyValueError::new_err(m) })?;
    let reference = reference.to_string();
    with_progress(py, store_dir.map(str::to_string), keep_blobs, progress, move |st, cb| st.pull_with(&reference, &opts, cb))
}

/// A build error as the Python layer's BuildError: the message (the failed RUN step's output in
/// it) and what it is about. `reason` is parse, instruction, step, sandbox, image, io,
/// cancelled or other (`BuildError::binding_payload`).
fn build_err(e: cagette::BuildError) -> PyErr {
    native_err("build", e.binding_payload(&python_words))
}

/// The core's build messages name the CLI's flags; here they are keyword arguments.
fn python_words(s: &str) -> String {
    [("(`--keep-blobs`)", "(keep_blobs=True)"), ("(`--pull missing`)", "(pull=True)"), ("(--step-timeout)", "(step_timeout)")].iter().fold(s.to_string(), |s, (cli, py)| s.replacen(cli, py, 1))
}

/// Builds an image from a Dockerfile. `options` is the JSON of
/// `cagette::BuildOptions::from_binding_json` (snake_case keys, `step_timeout` in seconds,
/// `pull`). The build runs on a thread of its own while this (the calling) thread waits for its
/// events and calls `progress(kind, n, total, line, text)` with the GIL at each one:
/// ("step", n, total, line, instruction), ("cached", 0, 0, 0, ""), ("pulling", 0, 0, 0,
/// reference), ("done", 0, 0, 0, manifest digest). Between events it looks for signals ten
/// times a second, so Ctrl-C reaches a running RUN step too. Ctrl-C, an exception in the
/// callback, or a return of exactly `False` cancels the build: a running step is killed with its
/// sandbox, nothing is tagged, and the exception (if any) is raised. At "done" the image is
/// already recorded: the exception is raised, but nothing is undone. Returns the ImageInfo as
/// JSON.
#[pyfunction]
#[pyo3(signature = (store_dir, context, options, progress=None))]
fn image_build(py: Python<'_>, store_dir: Option<&str>, context: &str, options: &str, progress: Option<Py<PyAny>>) -> PyResult<String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let mut opts = cagette::BuildOptions::from_binding_json(options, std::time::Duration::from_secs(1)).map_err(|e| match e {
        cagette::OptionsError::Type(m) => pyo3::exceptions::PyTypeError::new_err(m),
        cagette::OptionsError::Value(m) => pyo3::exceptions::PyValueError::new_err(format!("invalid cagette option value: {m}")),
    })?;
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let (store_dir, context) = (store_dir.map(str::to_string), context.to_string());
    // An event for this thread, and where the build waits for the answer (true: go on).
    type Event = ((&'static str, usize, usize, usize, String), mpsc::SyncSender<bool>);
    let (tx, rx) = mpsc::channel::<Event>();
    let mut raised: Option<PyErr> = None;
    let joined = std::thread::scope(|sc| {
        let opts = &opts;
        let (store_dir, context) = (&store_dir, &context);
        let worker = sc.spawn(move || -> PyResult<Result<cagette::ImageInfo, cagette::BuildError>> {
            let st = store(store_dir.as_deref())?;
            Ok(st.build(std::path::Path::new(context), opts, &mut |e| {
                let ev = match e {
                    cagette::BuildEvent::Step { n, total, line, text } => ("step", *n, *total, *line, text.clone()),
                    cagette::BuildEvent::Cached => ("cached", 0, 0, 0, String::new()),
                    cagette::BuildEvent::Pulling(r) => ("pulling", 0, 0, 0, r.clone()),
                    cagette::BuildEvent::Done(manifest) => ("done", 0, 0, 0, manifest.clone()),
                    _ => return std::ops::ControlFlow::Continue(()),
                };
                let (reply, answer) = mpsc::sync_channel(1);
                // This thread gone (it never is before the build ends) or a "cancel": stop.
                if tx.send((ev, reply)).is_err() || !answer.recv().unwrap_or(false) {
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            }))
        });
        let mut rx = Some(rx);
        loop {
            // (The receiver goes into the GIL-free closure and back: it is not Sync.)
            let (got, back) = py.detach(move || {
                let r = rx.take().map(|r| (r.recv_timeout(std::time::Duration::from_millis(100)), r));
                match r {
                    Some((got, r)) => (got, Some(r)),
                    None => (Err(mpsc::RecvTimeoutError::Disconnected), None),
                }
            });
            rx = back;
            match got {
                Ok(((kind, n, total, line, text), reply)) => {
                    let go = call_progress(&mut raised, &progress, (kind, n, total, line, text.as_str())).is_continue();
                    if !go {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    let _ = reply.send(go || kind == "done");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        raised.get_or_insert(e);
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                // The build has ended (it dropped its sender).
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        worker.join()
    });
    let r = joined.map_err(|_| native_err("error", serde_json::json!({"message": "the build's thread panicked"})))??;
    if let Some(e) = raised {
        return Err(e);
    }
    let info = r.map_err(build_err)?;
    serde_json::to_string(&info).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))
}

/// Stores registry credentials in a containers auth.json; returns the file's path.
#[pyfunction]
#[pyo3(signature = (registry, username, password, auth_file=None))]
fn login(py: Python<'_>, registry: &str, username: &str, password: &str, auth_file: Option<&str>) -> PyResult<String> {
    let (registry, username, password, auth_file) = (registry.to_string(), username.to_string(), password.to_string(), auth_file.map(std::path::PathBuf::from));
    py.detach(move || cagette::login(&registry, &username, &password, auth_file.as_deref())).map(|p| p.display().to_string()).map_err(image_err)
}

/// The caller's running named sandboxes, as JSON.
#[pyfunction]
fn list_sandboxes(py: Python<'_>) -> PyResult<String> {
    let l = py.detach(cagette::list_sandboxes).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))?;
    serde_json::to_string(&l).map_err(|e| native_err("error", serde_json::json!({"message": e.to_string()})))
}

/// What this host supports, as JSON.
#[pyfunction]
fn probe(py: Python<'_>) -> String {
    let p = py.detach(cagette::probe);
    serde_json::to_string(&p).unwrap_or_default()
}

#[pymodule]
mod _native {
    #[pymodule_export]
    use super::NativeError;
    #[pymodule_export]
    use super::{NativeChild, image, image_build, image_import, image_pull, list_sandboxes, login, probe, run_tty, spawn, validate};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
