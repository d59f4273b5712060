'use strict';
/**
 * cagette for Node.js: run commands in Linux sandboxes, shaped like child_process.
 *
 *   const { run, spawn, bind } = require('cagette');
 *   const r = await run(['npm', 'ci'], { memory: '2G', network: 'none', timeout: 600_000 });
 *
 * Options other than child_process-style ones (cwd, env, timeout, signal, stdio, input) are
 * fields of cagette's one sandbox description (the core's SandboxSpec): camelCase keys are
 * renamed to its snake_case ones and passed through, so they are checked in one place and a bad
 * key or value rejects with a TypeError naming it. Durations (timeout, cpuTime, cpuPeriod) are
 * milliseconds, converted to the core's seconds.
 */
const net = require('node:net');
const { EventEmitter } = require('node:events');
const os = require('node:os');
const { inspect } = require('node:util');
const { fileURLToPath } = require('node:url');
const native = require('../native.js');

const SIGNAL_NUMBERS = os.constants.signals;
const SIGNAL_NAMES = Object.fromEntries(Object.entries(SIGNAL_NUMBERS).map(([k, v]) => [v, k]));

/** camelCase -> snake_case, recursively for plain objects. Returns [converted, renames]. */
function snake(value, renames) {
  if (Array.isArray(value)) return value.map((v) => snake(v, renames));
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    const s = k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
    if (s !== k) renames.set(s, k);
    out[s] = snake(v, renames);
  }
  return out;
}

function camel(value) {
  if (Array.isArray(value)) return value.map(camel);
  if (value === null || typeof value !== 'object') return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k.replace(/_([a-z])/g, (_, c) => c.toUpperCase())] = camel(v);
  return out;
}

function cagetteError(e, renames) {
  let payload;
  try {
    payload = JSON.parse(e.message);
  } catch {
    return e;
  }
  if (payload.kind === 'build') {
    // The message as it is: a failed RUN step's output is in it.
    const err = new Error(payload.message);
    err.code = 'ERR_CAGETTE_BUILD';
    err.reason = payload.reason;
    err.file = payload.file ?? null;
    err.line = payload.line ?? null;
    err.column = payload.column ?? null;
    err.command = payload.command ?? null;
    err.verdict = payload.verdict ?? null;
    err.exitCode = payload.exit_status ?? null;
    err.output = payload.output ?? null;
    return err;
  }
  let msg = payload.message || String(e.message);
  // The options the caller gave, named as they were written (`cpu_period` and cpu_period alike).
  for (const [s, k] of renames || []) {
    const escaped = s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    msg = msg.replace(new RegExp(`(?<![A-Za-z0-9_])${escaped}(?![A-Za-z0-9_])`, 'g'), k);
  }
  // Name the core's snake_case options the way JS callers write them; an enum's values (an
  // unknown variant, what it expected instead) are written as they are.
  if (!msg.includes('unknown variant')) msg = msg.replace(/`([a-z0-9]+(?:_[a-z0-9]+)+)`/g, (_, n) => '`' + n.replace(/_([a-z0-9])/g, (__, c) => c.toUpperCase()) + '`');
  if (payload.kind === 'spec_key' || payload.kind === 'spec_value') {
    const err = new TypeError(`invalid cagette option: ${msg}`);
    err.code = 'ERR_CAGETTE_INVALID_OPTION';
    return err;
  }
  if (payload.kind === 'setup') {
    const err = new Error(payload.hint ? `${msg} (hint: ${payload.hint})` : msg);
    err.code = payload.step === 'cgroup' ? 'ERR_CAGETTE_LIMIT_UNSUPPORTED' : 'ERR_CAGETTE_SETUP';
    err.step = payload.step;
    err.errno = payload.errno ?? null;
    err.path = payload.path ?? null;
    err.hint = payload.hint ?? null;
    // A command that cannot be executed errs as child_process's does (code 'ENOENT',
    // 'EACCES', ...), with cagette's details kept (cagetteCode, step, hint).
    if (payload.step === 'exec' && payload.errno) {
      const name = Object.entries(os.constants.errno).find(([, v]) => v === payload.errno);
      if (name) {
        err.cagetteCode = err.code;
        err.code = name[0];
        err.syscall = `spawn ${payload.path ?? ''}`.trim();
      }
    }
    return err;
  }
  const err = new Error(msg);
  err.code = payload.kind === 'image' ? 'ERR_CAGETTE_IMAGE' : 'ERR_CAGETTE';
  return err;
}

function abortError(signal, result) {
  const err = new Error('The operation was aborted', { cause: signal && signal.reason });
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  if (result) err.result = result;
  return err;
}

const JS_OPTIONS = new Set(['cwd', 'env', 'timeout', 'signal', 'stdio', 'stdin', 'stdout', 'stderr', 'input', 'cpuTime', 'cpuPeriod']);

function invalidOption(message) {
  const err = new TypeError(`invalid cagette option: ${message}`);
  err.code = 'ERR_CAGETTE_INVALID_OPTION';
  return err;
}

/** A bad argument, reported as Node's own functions report theirs (ERR_INVALID_ARG_TYPE). */
function argTypeError(name, expected, value) {
  const got = value == null ? String(value) : typeof value === 'object' ? `an instance of ${value.constructor?.name ?? 'Object'}` : `type ${typeof value} (${inspect(value)})`;
  const err = new TypeError(`The "${name}" argument must be ${expected}. Received ${got}`);
  err.code = 'ERR_INVALID_ARG_TYPE';
  return err;
}

function stringArg(value, name) {
  if (typeof value !== 'string') throw argTypeError(name, 'of type string', value);
  return value;
}

function streamSpec(v, name) {
  if (v === undefined || v === 'inherit') return 'inherit';
  if (v === 'pipe') return 'piped';
  if (v === 'ignore' || v === null) return 'null';
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return { fd: v };
  const err = new TypeError(`invalid cagette option: ${name} must be 'pipe', 'ignore', 'inherit' or an fd number, got ${String(v)}`);
  err.code = 'ERR_CAGETTE_INVALID_OPTION';
  throw err;
}

/** Builds the core's spec from argv and JS options. */
function buildSpec(argv, options, defaults) {
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) {
    const err = new TypeError('invalid cagette option: argv must be a non-empty array of strings (no shell is run)');
    err.code = 'ERR_CAGETTE_INVALID_OPTION';
    throw err;
  }
  const opts = options || {};
  const renames = new Map();
  const rest = {};
  for (const [k, v] of Object.entries(opts)) if (!JS_OPTIONS.has(k)) rest[k] = v;
  const spec = snake(rest, renames);
  // An OCI seccomp profile keeps its keys as an OCI config.json writes them (defaultAction, ...).
  if (rest.seccomp !== undefined) spec.seccomp = rest.seccomp;
  spec.argv = argv;
  if (opts.cwd !== undefined) {
    // A string or a file: URL, as child_process takes it.
    if (opts.cwd instanceof URL) spec.cwd = fileURLToPath(opts.cwd);
    else if (typeof opts.cwd === 'string') spec.cwd = opts.cwd;
    else throw argTypeError('options.cwd', 'of type string or an instance of URL', opts.cwd);
    // As child_process means it: a host directory (bound read-write at the same path); a path
    // that is no host directory is one inside the sandbox. With execIn, always a path inside
    // the running sandbox (whose mounts are its own).
    if (opts.execIn == null) spec.cwd_host = true;
  }
  if (opts.env !== undefined) spec.env = Object.fromEntries(Object.entries(opts.env).map(([k, v]) => [k, String(v)]));
  const ms = (v, name) => {
    if (v === undefined || v === null) return undefined;
    // Infinity would reach the core as null: no limit at all.
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw invalidOption(`${name} must be a finite number of milliseconds, got ${String(v)}`);
    return v / 1000;
  };
  if (opts.timeout !== undefined && opts.timeout !== 0) spec.timeout = ms(opts.timeout, 'timeout');
  if (opts.cpuTime !== undefined) {
    spec.cpu_time = ms(opts.cpuTime, 'cpuTime');
    renames.set('cpu_time', 'cpuTime');
  }
  if (opts.cpuPeriod !== undefined) {
    spec.cpu_period = ms(opts.cpuPeriod, 'cpuPeriod');
    renames.set('cpu_period', 'cpuPeriod');
  }
  const stdio = Array.isArray(opts.stdio) ? opts.stdio : typeof opts.stdio === 'string' ? [opts.stdio, opts.stdio, opts.stdio] : [];
  spec.stdin = streamSpec(opts.stdin ?? stdio[0] ?? defaults[0], 'stdin');
  spec.stdout = streamSpec(opts.stdout ?? stdio[1] ?? defaults[1], 'stdout');
  spec.stderr = streamSpec(opts.stderr ?? stdio[2] ?? defaults[2], 'stderr');
  return { json: JSON.stringify(spec), renames };
}

/** Turns a report (JSON) into the Result object. */
function makeResult(reportJson, stdout, stderr) {
  const report = JSON.parse(reportJson);
  let signal = null;
  if (report.verdict === 'signaled' || report.verdict === 'seccomp_killed') signal = SIGNAL_NAMES[report.signal] || null;
  else if (report.verdict === 'oom_killed' || report.verdict === 'timed_out' || report.verdict === 'network_lost') signal = 'SIGKILL';
  const usage = camel({
    wall_time_s: report.wall_time_s,
    cpu_user_s: report.cpu_user_s,
    cpu_system_s: report.cpu_system_s,
    memory_peak_bytes: report.memory_peak_bytes,
    max_rss_bytes: report.max_rss_bytes,
    pids_peak: report.pids_peak,
    io_read_bytes: report.io_read_bytes,
    io_write_bytes: report.io_write_bytes,
    oom_kill_count: report.oom_kill_count,
  });
  usage.pressure = report.pressure ? camel(report.pressure) : null;
  return {
    exitCode: report.verdict === 'exited' ? report.exit_code : null,
    signal,
    verdict: report.verdict,
    timeoutLimit: report.limit ?? null,
    syscall: report.syscall ?? null,
    usage,
    stdout: stdout ?? null,
    stderr: stderr ?? null,
  };
}

function nativeSpawn(json, renames) {
  try {
    return native.spawn(json);
  } catch (e) {
    throw cagetteError(e, renames);
  }
}

function signalNumber(sig) {
  if (sig === undefined) return SIGNAL_NUMBERS.SIGTERM;
  // As child_process: a name or a number the kernel knows (0 only checks that it runs).
  const n = typeof sig === 'number' ? (Number.isInteger(sig) && sig >= 0 && sig <= 64 ? sig : undefined) : SIGNAL_NUMBERS[sig];
  if (n === undefined) {
    const e = new TypeError(`Unknown signal: ${String(sig)}`);
    e.code = 'ERR_UNKNOWN_SIGNAL';
    throw e;
  }
  return n;
}

/**
 * Runs argv in a sandbox; resolves with the Result once it ended (whatever its verdict).
 * stdout and stderr are captured as Buffers unless set otherwise; `input` feeds stdin.
 * Rejects with an AbortError when `signal` aborts (the whole sandbox is killed), with
 * ERR_CAGETTE_SETUP / ERR_CAGETTE_LIMIT_UNSUPPORTED errors when it could not be set up, and with
 * a TypeError (ERR_CAGETTE_INVALID_OPTION) for a bad option.
 */
async function run(argv, options = {}) {
  const { signal } = options;
  if (signal && signal.aborted) throw abortError(signal);
  const hasInput = options.input !== undefined && options.input !== null;
  const { json, renames } = buildSpec(argv, options, [hasInput ? 'pipe' : 'ignore', 'pipe', 'pipe']);
  let job;
  try {
    job = native.startRun(json); // checks the options now
  } catch (e) {
    throw cagetteError(e, renames);
  }
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    job.kill(SIGNAL_NUMBERS.SIGKILL);
  };
  if (signal) signal.addEventListener('abort', onAbort, { once: true });
  try {
    const input = hasInput ? (Buffer.isBuffer(options.input) ? options.input : Buffer.from(String(options.input))) : undefined;
    // Spawning, feeding, collecting and waiting all happen on a thread of the job's own.
    const out = await job.output(input).catch((e) => {
      throw cagetteError(e, renames);
    });
    const result = makeResult(out.report, out.stdout, out.stderr);
    if (aborted) throw abortError(signal, result);
    return result;
  } finally {
    if (signal) signal.removeEventListener('abort', onAbort);
  }
}

/** A running sandboxed command (see spawn()): an EventEmitter like child_process's
 * ChildProcess ('spawn', 'error', 'exit', 'close'). */
class SandboxProcess extends EventEmitter {
  constructor(child, signal, failure) {
    super();
    if (failure) {
      // As child_process.spawn: the failure is emitted asynchronously, never thrown.
      this._child = null;
      this.pid = undefined;
      this.stdin = this.stdout = this.stderr = null;
      this.result = null;
      this.exited = Promise.reject(failure);
      this.exited.catch(() => {});
      process.nextTick(() => this.emit('error', failure));
      return;
    }
    this._child = child;
    /** Host pid of the sandbox's init. */
    this.pid = child.pid;
    const [inFd, outFd, errFd] = child.takeStdio();
    this.stdin = inFd == null ? null : new net.Socket({ fd: inFd, readable: false, writable: true });
    this.stdout = outFd == null ? null : new net.Socket({ fd: outFd, readable: true, writable: false });
    this.stderr = errFd == null ? null : new net.Socket({ fd: errFd, readable: true, writable: false });
    for (const s of [this.stdin, this.stdout, this.stderr]) if (s) s.on('error', () => {});
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      child.kill(SIGNAL_NUMBERS.SIGKILL);
    };
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    this.result = null;
    /** Resolves with the Result when the sandbox has ended. */
    process.nextTick(() => this.emit('spawn'));
    this.exited = child.wait().finally(() => child.release()).then(
      (report) => {
        if (signal) signal.removeEventListener('abort', onAbort);
        if (this.stdin && !this.stdin.destroyed) this.stdin.destroy();
        this.result = makeResult(report, null, null);
        this.emit('exit', this.result.exitCode, this.result.signal);
        this.emit('close', this.result.exitCode, this.result.signal);
        if (aborted) throw abortError(signal, this.result);
        return this.result;
      },
      (e) => {
        if (signal) signal.removeEventListener('abort', onAbort);
        throw cagetteError(e);
      },
    );
  }

  /** Sends a signal (default SIGTERM) to the sandbox: forwarded to the payload; SIGKILL
   * kills the whole tree. Returns false when it had already ended. */
  kill(sig) {
    const n = signalNumber(sig);
    if (this.result || !this._child) return false;
    try {
      this._child.kill(n);
    } catch (e) {
      throw cagetteError(e);
    }
    return true;
  }
}

/**
 * Starts argv in a sandbox and returns a SandboxProcess at once (spawning takes about as long as
 * child_process.spawn). stdin, stdout and stderr are streams by default ('pipe').
 */
function spawn(argv, options = {}) {
  const { signal } = options;
  // The terminal's output would be read by nothing here, and the job could block on it.
  if (options.tty) throw invalidOption('tty: only run() gives the command a terminal (spawn() does not)');
  if (signal && signal.aborted) throw abortError(signal);
  const { json, renames } = buildSpec(argv, options, ['pipe', 'pipe', 'pipe']);
  let child;
  try {
    child = nativeSpawn(json, renames);
  } catch (e) {
    // Bad options throw (as child_process.spawn's bad arguments do); a sandbox that could not
    // be started (a missing command, a limit that cannot be applied) emits 'error'.
    if (e instanceof TypeError) throw e;
    return new SandboxProcess(null, signal, e);
  }
  return new SandboxProcess(child, signal);
}

/** A host path seen at `destination` in the sandbox. */
function bind(source, destination, options = {}) {
  return { type: 'bind', source: stringArg(source, 'source'), destination: stringArg(destination, 'destination'), readOnly: Boolean(options.readOnly), recursive: options.recursive !== false };
}

/** A fresh tmpfs at `destination` (`size` like '64M'). */
function tmpfs(destination, options = {}) {
  return { type: 'tmpfs', destination: stringArg(destination, 'destination'), size: options.size ?? null, mode: options.mode ?? null };
}

/** An overlay of `lower` directories (first on top) with an ephemeral upper layer. */
function overlay(lower, destination, options = {}) {
  if (!Array.isArray(lower)) throw argTypeError('lower', 'an instance of Array', lower);
  return { type: 'overlay', destination: stringArg(destination, 'destination'), lower: lower.map((l, i) => stringArg(l, `lower[${i}]`)), upper: options.upper ?? null, work: options.work ?? null };
}

/** What this host supports (user namespaces, cgroup version and controllers, ...). */
function probe() {
  return camel(JSON.parse(native.probe()));
}

/** Checks options without running anything; returns the complete spec (snake_case, as the
 * core sees it). Throws a TypeError (ERR_CAGETTE_INVALID_OPTION) naming a bad key or value. */
function validate(options = {}) {
  const { json, renames } = buildSpec(['true'], options, ['inherit', 'inherit', 'inherit']);
  try {
    return JSON.parse(native.validate(json));
  } catch (e) {
    throw cagetteError(e, renames);
  }
}

/** cagette's image store (OCI image layouts and docker-save archives, verified; images pulled
 * or built from a Dockerfile). Run from an image with run(argv, { image: 'name:tag',
 * imageStore: store.path }). All methods return promises; the work happens off the event
 * loop. */
class ImageStore {
  constructor(path) {
    this.path = path == null ? null : stringArg(path, 'path');
  }
  async _op(op, a, b) {
    try {
      return JSON.parse(await native.image(op, this.path, a ?? null, b ?? null));
    } catch (e) {
      throw cagetteError(e);
    }
  }
  /**
   * Imports an image. `options.onProgress({ layers, layersDone, bytes, bytesDone })` is called
   * about ten times a second and once at the end; `options.signal` (an AbortSignal) cancels:
   * the promise rejects with code ERR_CAGETTE_IMAGE ("import cancelled"), nothing is left.
   * `options.keepBlobs` also keeps the manifest, config and compressed layers exactly as
   * verified (an OCI layout only), as the base (FROM) of a build must have.
   */
  async importImage(source, name, options = {}) {
    stringArg(source, 'source');
    stringArg(name, 'name');
    let job;
    try {
      job = native.startImport(this.path, source, name, Boolean(options.keepBlobs));
    } catch (e) {
      throw cagetteError(e);
    }
    return this._job(job, options);
  }
  /**
   * Pulls `reference` from its registry (`alpine:3.20` is docker.io/library/alpine:3.20;
   * loopback registries over plain HTTP, others over HTTPS unless in `insecureRegistries`) into
   * the store under that name; layers are verified and unpacked while they download, layers
   * the store has are skipped. Options: `platform` ('os/arch[/variant]'), `insecureRegistries`,
   * `caFiles`, `credentials` ([user, password]; else `authFile`, else the user's auth.json or
   * docker config.json), `timeout` (ms, per request), and `onProgress`/`signal`/`keepBlobs` as
   * importImage.
   */
  async pull(reference, options = {}) {
    const { onProgress, signal, keepBlobs, ...rest } = options;
    let job;
    try {
      job = native.startPull(this.path, stringArg(reference, 'reference'), JSON.stringify(rest), Boolean(keepBlobs));
    } catch (e) {
      throw cagetteError(e);
    }
    return this._job(job, { onProgress, signal });
  }
  async _job(job, options) {
    const { onProgress, signal } = options;
    const report = () => {
      const [layers, layersDone, bytes, bytesDone] = job.progress();
      if (onProgress) onProgress({ layers, layersDone, bytes, bytesDone });
    };
    const onAbort = () => job.cancel();
    if (signal) {
      if (signal.aborted) job.cancel();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
    const timer = onProgress ? setInterval(report, 100) : null;
    try {
      const info = camel(JSON.parse(await job.run()));
      if (onProgress) report();
      return info;
    } catch (e) {
      throw cagetteError(e);
    } finally {
      if (timer) clearInterval(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }
  /**
   * Builds an image from a Dockerfile (`dockerfile`, default CONTEXT/Dockerfile) and the
   * `context` directory into the store, as `tag` ('name:tag'; without one the image is known
   * by its manifest digest only); resolves with the image, as get() does. Each RUN step runs
   * in a sandbox on the image so far (`network` 'host', like Docker's default, or 'none';
   * `memory` like '256M', `cpus`, `pids` and `stepTimeout` in ms limit each step), its output
   * captured: a failed step rejects with code ERR_CAGETTE_BUILD (reason 'step', line,
   * exitCode, output). FROM images must be in the store with their blobs kept (`keepBlobs` on
   * importImage or pull), unless `pull` is given (true, or registry options such as
   * { insecureRegistries: ['127.0.0.1:5000'] }): then a base the store lacks is pulled.
   * Steps are cached (`noCache` runs them all); `buildArgs` give the ARGs' values, `target`
   * builds up to that stage. `onProgress` gets { kind: 'step', n, total, line, text },
   * { kind: 'cached' }, { kind: 'pulling', reference } and { kind: 'done', manifest }, in order, a
   * little after they happen; `signal` (an AbortSignal) cancels: a running RUN step is killed
   * with its sandbox, the promise rejects with an AbortError and nothing is tagged (an abort
   * once the image is recorded comes too late: the promise resolves). An exception in
   * `onProgress` cancels too, and the promise rejects with it.
   */
  async build(context, options = {}) {
    const { onProgress, signal, ...rest } = options;
    stringArg(context, 'context');
    if (signal && signal.aborted) throw abortError(signal);
    if (rest.buildArgs != null) rest.buildArgs = Object.fromEntries(Object.entries(rest.buildArgs).map(([k, v]) => [k, String(v)]));
    if (rest.dockerfile != null) stringArg(rest.dockerfile, 'options.dockerfile');
    if (typeof rest.target === 'number') rest.target = String(rest.target);
    let job;
    try {
      job = native.startBuild(this.path, context, JSON.stringify(rest));
    } catch (e) {
      throw cagetteError(e);
    }
    let threw = false;
    let thrown; // what onProgress threw
    const deliver = () => {
      for (const e of job.takeEvents()) {
        if (!onProgress || threw) continue;
        const event = e.kind === 'step' ? { kind: 'step', n: e.n, total: e.total, line: e.line, text: e.text } : e.kind === 'done' ? { kind: 'done', manifest: e.text } : e.kind === 'pulling' ? { kind: 'pulling', reference: e.text } : { kind: e.kind };
        try {
          onProgress(event);
        } catch (err) {
          threw = true;
          thrown = err;
          job.cancel();
        }
      }
    };
    const onAbort = () => job.cancel();
    if (signal) signal.addEventListener('abort', onAbort, { once: true });
    const timer = onProgress ? setInterval(deliver, 50) : null;
    try {
      let info;
      try {
        info = camel(JSON.parse(await job.run()));
      } catch (e) {
        deliver();
        const err = cagetteError(e);
        if (err.reason === 'cancelled') throw threw ? thrown : abortError(signal);
        throw err;
      }
      deliver();
      if (threw) throw thrown;
      return info;
    } finally {
      if (timer) clearInterval(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }
  list() { return this._op('list').then(camel); }
  async get(name) { return camel(await this._op('get', stringArg(name, 'name'))); }
  async remove(name) { await this._op('remove', stringArg(name, 'name')); }
  gc() { return this._op('gc'); }
  async unpack(name, dest) { await this._op('unpack', stringArg(name, 'name'), stringArg(dest, 'dest')); }
}

/**
 * Stores credentials for `registry` ('host[:port]') in a containers auth.json (the file podman
 * and skopeo read: `authFile`, else $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json,
 * else ~/.config/containers/auth.json), mode 0600; returns its path.
 */
function login(registry, username, password, authFile) {
  try {
    return native.login(stringArg(registry, 'registry'), stringArg(username, 'username'), stringArg(password, 'password'), authFile == null ? null : stringArg(authFile, 'authFile'));
  } catch (e) {
    throw cagetteError(e);
  }
}

/**
 * The caller's running named sandboxes (started with `name`, or `cagette run --name`), oldest
 * first: { name, pid, hostPid, started, argv, memoryBytes, cpuS }. Run more commands in one
 * with `run(argv, { execIn: name })`.
 */
function list() {
  try {
    return camel(JSON.parse(native.listSandboxes()));
  } catch (e) {
    throw cagetteError(e);
  }
}

module.exports = { run, spawn, SandboxProcess, bind, tmpfs, overlay, probe, validate, ImageStore, login, list };
