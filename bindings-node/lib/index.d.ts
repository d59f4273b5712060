import { EventEmitter } from 'node:events';
// Public types of the `cagette` package. The native layer's types (native.d.ts) are generated
// by napi-rs from the Rust code.
import type { Readable, Writable } from 'node:stream';

/** How a job ended: the same strings as `cagette run --report`. */
export type Verdict = 'exited' | 'signaled' | 'oom_killed' | 'seccomp_killed' | 'timed_out' | 'network_lost';

/** A standard stream: a pipe (default for spawn), /dev/null, the parent's, or an fd. */
export type StdioOption = 'pipe' | 'ignore' | 'inherit' | number;

/** Mount propagation within the sandbox's mount namespace (mount(8)'s --make-* options). */
export type Propagation = 'private' | 'rprivate' | 'shared' | 'rshared' | 'slave' | 'rslave' | 'unbindable' | 'runbindable';

/** Flags of a mount beyond those cagette always sets (every mount but /dev is nodev; tmpfs,
 * proc, sysfs and /dev are nosuid). */
export interface MountFlags {
  /** Ignore set-user-id and set-group-id bits and file capabilities. */
  nosuid?: boolean;
  /** Refuse to execute files. */
  noexec?: boolean;
  /** How access times are updated (default 'relatime'). */
  atime?: 'relatime' | 'strictatime' | 'noatime' | 'nodiratime';
  /** Propagation inside the sandbox (default private; the host never shares with it). */
  propagation?: Propagation;
}

export interface BindMount {
  type: 'bind';
  /** Host path (a relative one is taken from the process's cwd). */
  source: string;
  destination: string;
  readOnly?: boolean;
  /** Include the mounts below `source` (default true). */
  recursive?: boolean;
  /** nosuid, noexec and access-time flags. */
  flags?: MountFlags;
}
export interface TmpfsMount {
  type: 'tmpfs';
  destination: string;
  /** Size limit, e.g. '64M' or a number of bytes (default: the kernel's, half of RAM). */
  size?: number | string | null;
  /** Mode of its root directory (default 0o1777). */
  mode?: number | null;
  /** noexec and access-time flags (nosuid is always set). */
  flags?: MountFlags;
  /** Its source as /proc/self/mountinfo shows it (default 'tmpfs'). */
  source?: string | null;
}
export interface OverlayMount {
  type: 'overlay';
  destination: string;
  lower: string[];
  upper?: string | null;
  work?: string | null;
}
export interface ProcMount {
  type: 'proc';
  destination: string;
}
/** A minimal /dev (null, zero, full, random, urandom, tty, a private devpts, shm). */
export interface DevMount {
  type: 'dev';
  destination: string;
  /** The tmpfs's size limit (default 64 KiB). */
  size?: number | string | null;
  /** Access-time flags (it is always nosuid and noexec). */
  flags?: MountFlags;
}
/** A fresh, read-only sysfs (needs a network namespace of the sandbox's own). */
export interface SysfsMount {
  type: 'sysfs';
  destination: string;
}
/** A fresh POSIX message queue file system (of the sandbox's IPC namespace). */
export interface MqueueMount {
  type: 'mqueue';
  destination: string;
}
/** The sandbox's cgroups (cgroup2 on a v2 host, each controller's hierarchy below a tmpfs on
 * v1); needs a cgroup namespace of the sandbox's own. */
export interface CgroupMount {
  type: 'cgroup';
  destination: string;
  /** Refuse writes (default true). */
  readOnly?: boolean;
}
export type Mount = BindMount | TmpfsMount | OverlayMount | ProcMount | DevMount | SysfsMount | MqueueMount | CgroupMount;

/** A Linux capability by its kernel name, e.g. 'CAP_NET_RAW'. */
export type Capability = `CAP_${string}`;

/** An OCI runtime-spec `linux.seccomp` profile, with its keys as an OCI config.json writes them. */
export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number | null;
  architectures?: string[];
  syscalls?: Array<{
    names: string[];
    action: string;
    errnoRet?: number | null;
    args?: Array<{ index: number; value: number; valueTwo?: number; op: string }>;
  }>;
}

export type NamespaceMode = 'new' | 'host' | { join: string };

/** Options: child_process-style ones, then the sandbox's (fields of the core's SandboxSpec). */
export interface Options {
  /** Working directory, as child_process means it: a host directory (a relative path is taken
   * from process.cwd()) is bound read-write at the same path in the sandbox, unless a mount
   * already targets that path, and the command starts there. A path that is no host directory
   * is a path inside the sandbox (a mount's destination, a directory of the image). Default:
   * '/' (or the image's WorkingDir). With execIn: a directory inside the running sandbox,
   * nothing is bound (default: the sandbox's own working directory). A file: URL is taken as
   * its path, as child_process does. */
  cwd?: string | URL;
  /** Environment variables, on top of PATH, HOME and TERM (or the host's with inheritEnv). */
  env?: Record<string, string>;
  /** Wall-clock limit in milliseconds (finite; 0 or unset: none): the whole sandbox is killed
   * (verdict 'timed_out'). */
  timeout?: number;
  /** CPU-time limit in milliseconds (finite, more than 0) for the whole job (verdict
   * 'timed_out', limit 'cpu'). */
  cpuTime?: number;
  /** Aborting kills the whole sandbox; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Shorthand for stdin, stdout, stderr. */
  stdio?: StdioOption | [StdioOption, StdioOption, StdioOption];
  stdin?: StdioOption;
  stdout?: StdioOption;
  stderr?: StdioOption;
  /** Data written to stdin (run() only). */
  input?: string | Buffer;

  /** Network: 'none' (own namespace, loopback only; the default), 'private' (own namespace with a
   * way out through slirp4netns, never to the host's loopback), 'bridge' (root: a veth pair routed
   * by the host's kernel, never to the host itself; see docs/network.md) or 'host'. */
  network?: 'none' | 'private' | 'bridge' | 'host' | { join: string };
  /** With network 'private': host ports forwarded in, '[HOST_IP:]HOST_PORT:PORT[/udp]' (127.0.0.1 by default). */
  publish?: string[];
  /** With network 'private' or 'bridge': name servers of the sandbox's /etc/resolv.conf. */
  dns?: string[];
  /** With network 'private' or 'bridge': extra /etc/hosts lines, 'NAME:IP'. */
  addHosts?: string[];
  /** With network 'private': let the sandbox reach the host's loopback and link-local addresses. */
  allowHostLoopback?: boolean;
  hostname?: string;
  /** Memory limit of the whole job, e.g. '2G' or a number of bytes. */
  memory?: number | string;
  memoryHigh?: number | string;
  memorySwap?: number | string;
  /** CPU quota in CPUs (0.5 = half a CPU). */
  cpus?: number;
  /** The period of the `cpus` quota in milliseconds, 1 to 1000 (default 100); needs cpus. */
  cpuPeriod?: number;
  cpuWeight?: number;
  /** Maximum number of processes and threads. */
  pids?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  ioWeight?: number;
  /** Per-device I/O limits: `device` a path ('/dev/vda') or 'MAJOR:MINOR'; bytes per second
   * ('10M' or a number) and operations per second, read and write. */
  ioMax?: Array<{ device: string; rbps?: number | string | null; wbps?: number | string | null; riops?: number | null; wiops?: number | null }>;
  /** What an OOM kill of one process does: 'kill_job' (the default: the whole job is killed,
   * verdict 'oom_killed') or 'continue' (the others go on; usage.oomKillCount counts the kills). */
  oomPolicy?: 'kill_job' | 'continue';
  /** 'auto' (a cgroup when a limit is set), 'always', 'never'. */
  cgroup?: 'auto' | 'always' | 'never';
  cgroupParent?: string;
  mounts?: Mount[];
  /** Run from this image of the store (name:tag): its layers are the root. */
  image?: string;
  /** The image store (default /var/lib/cagette as root, ~/.local/share/cagette otherwise). */
  imageStore?: string;
  /** With image: keep what the job writes to the root in this host directory (the root overlay's
   * upper layer); needs imageWork, an empty directory on the same file system. */
  imageUpper?: string;
  /** The overlay work directory that goes with imageUpper. */
  imageWork?: string;
  /** With image: replaces its Entrypoint ([] clears it), as `docker run --entrypoint`; argv
   * then replaces its Cmd. */
  entrypoint?: string[] | null;
  /** A directory to use as the root file system (default: the host's / read-only). */
  rootfs?: string;
  rootfsWritable?: boolean;
  /** Propagation of the root mount inside the sandbox (default private). */
  rootfsPropagation?: Propagation | null;
  /** Follow symlinks in host paths (rootfs, bind sources, overlay directories); off by
   * default: a host path that crosses a symlink is refused. */
  followSymlinks?: boolean;
  /** Host device nodes the command may use besides the standard ones, e.g. '/dev/fuse'. */
  devices?: string[];
  /** The command's file mode creation mask, e.g. 0o077 (default: this process's). */
  umask?: number | null;
  inheritEnv?: boolean;
  /** How ids map in a new user namespace without uidMap/gidMap: 'auto' (the default: as root,
   * a private range of unprivileged host ids; otherwise your own id is 0 inside) or 'host'
   * (uid 0 inside is your own uid: as root, host root — unsafe). */
  userns?: 'auto' | 'host';
  user?: number;
  group?: number;
  supplementaryGroups?: number[];
  uidMap?: Array<{ inside: number; outside: number; count: number }>;
  gidMap?: Array<{ inside: number; outside: number; count: number }>;
  namespaces?: Partial<Record<'user' | 'pid' | 'mount' | 'uts' | 'ipc' | 'cgroup' | 'time', NamespaceMode>>;
  proc?: boolean;
  dev?: boolean;
  tmp?: boolean;
  sys?: boolean;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  /** The capabilities the command keeps (default: cagette's default set). */
  capabilities?: Capability[] | null;
  /** Capabilities added to `capabilities` (or to the default set). */
  capAdd?: Capability[];
  /** Capabilities removed from `capabilities` (or from the default set). */
  capDrop?: Capability[];
  /** Also raise the kept capabilities as ambient ones, so that a command running as a non-zero
   * uid keeps them across exec. */
  ambientCapabilities?: boolean;
  noNewPrivs?: boolean;
  /** System-call filter: 'default' (cagette's profile, with the effect of Docker's), 'none', or
   * an OCI profile. */
  seccomp?: 'default' | 'none' | OciSeccomp;
  /** System calls allowed although the default profile denies them. */
  seccompAllow?: string[];
  /** System calls denied on top of the profile. */
  seccompDeny?: string[];
  /** Kill the process on a denied system call (SIGSYS, verdict 'seccomp_killed') instead of
   * failing it with EPERM. */
  seccompKill?: boolean;
  /** Let the command create user namespaces (the default profile refuses them). */
  allowUserNamespaces?: boolean;
  /** Landlock: everything read-only (and executable) but the `writable` paths inside the
   * sandbox; fails when the kernel has no Landlock. */
  landlock?: { writable?: string[] } | null;
  /** A terminal of its own: a pty is the command's stdin, stdout and stderr (run() captures
   * what it printed there as stdout). run() only: spawn() throws a TypeError. */
  tty?: boolean;
  rlimits?: Array<{ resource: string; soft: number; hard: number }>;
  passFds?: Array<{ host: number; sandbox: number }>;
  /** Register the sandbox under this name while it runs (list() shows it; execIn joins it). */
  name?: string;
  /** Run the command in the running sandbox of this name (as `docker exec`), with its root,
   * mounts and limits; `cwd` is then a directory inside it. */
  execIn?: string;
}

/** What a job used. Seconds and bytes. */
export interface Usage {
  wallTimeS: number;
  cpuUserS: number;
  cpuSystemS: number;
  /** The job's cgroup peak when it has a cgroup, else the largest process's peak RSS. */
  memoryPeakBytes: number | null;
  /** Peak RSS of the largest single process. */
  maxRssBytes: number | null;
  pidsPeak: number | null;
  ioReadBytes: number | null;
  ioWriteBytes: number | null;
  oomKillCount: number;
  pressure: { cpuSome: number; memorySome: number; memoryFull: number; ioSome: number; ioFull: number } | null;
}

export interface Result {
  /** The exit code when the verdict is 'exited', else null. */
  exitCode: number | null;
  /** The signal's name when killed by one ('SIGKILL' for OOM kills and timeouts), else null. */
  signal: NodeJS.Signals | null;
  verdict: Verdict;
  /** For 'timed_out': which limit ran out. */
  timeoutLimit: 'wall' | 'cpu' | null;
  /** For 'seccomp_killed': the denied system call, when the kernel told it. */
  syscall: string | null;
  usage: Usage;
  /** Captured stdout (run() with stdout 'pipe', the default), else null. */
  stdout: Buffer | null;
  /** Captured stderr (run() with stderr 'pipe', the default), else null. */
  stderr: Buffer | null;
}

/** Errors have these codes: ERR_CAGETTE_SETUP (with step, errno, path, hint),
 * ERR_CAGETTE_LIMIT_UNSUPPORTED, ERR_CAGETTE_INVALID_OPTION (a TypeError), ERR_CAGETTE, and
 * ABORT_ERR (an AbortError, with the result). A command that cannot be executed has the errno's
 * name as its code, as child_process's errors do ('ENOENT', 'EACCES'), with cagetteCode
 * 'ERR_CAGETTE_SETUP', syscall 'spawn CMD' and the details above. A name or path argument that
 * is no string is a TypeError ERR_INVALID_ARG_TYPE, as Node's own functions throw. */
export interface CagetteError extends Error {
  code: 'ERR_CAGETTE_SETUP' | 'ERR_CAGETTE_LIMIT_UNSUPPORTED' | 'ERR_CAGETTE_INVALID_OPTION' | 'ERR_CAGETTE_IMAGE' | 'ERR_CAGETTE_BUILD' | 'ERR_CAGETTE' | 'ABORT_ERR' | 'ERR_INVALID_ARG_TYPE' | 'ENOENT' | 'EACCES' | string;
  cagetteCode?: 'ERR_CAGETTE_SETUP';
  syscall?: string;
  step?: string;
  errno?: number | null;
  path?: string | null;
  hint?: string | null;
  result?: Result;
}

export declare class SandboxProcess extends EventEmitter {
  readonly pid: number;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  /** Resolves with the Result when the sandbox has ended. */
  readonly exited: Promise<Result>;
  /** Set once it has ended. */
  result: Result | null;
  /** Sends a signal (default SIGTERM); SIGKILL kills the whole tree; 0 only checks that it
   * runs. Returns false when it had already ended; throws a TypeError (`ERR_UNKNOWN_SIGNAL`) for a
   * name or number the kernel does not know, as child_process does. */
  kill(signal?: NodeJS.Signals | number): boolean;
}

export declare function run(argv: string[], options?: Options): Promise<Result>;
export declare function spawn(argv: string[], options?: Options): SandboxProcess;
export declare function bind(source: string, destination: string, options?: { readOnly?: boolean; recursive?: boolean }): BindMount;
export declare function tmpfs(destination: string, options?: { size?: number | string; mode?: number }): TmpfsMount;
export declare function overlay(lower: string[], destination: string, options?: { upper?: string; work?: string }): OverlayMount;

export interface Probe {
  kernel: string;
  root: boolean;
  userNamespaces: boolean;
  clone3: boolean;
  pidfd: boolean;
  mountApi: boolean;
  overlayfs: boolean;
  seccomp: boolean;
  landlockAbi: number | null;
  cgroup: 'v1' | 'v2' | 'none';
  cgroupControllers: string[];
}
export declare function probe(): Probe;
export declare function validate(options?: Options): Record<string, unknown>;

export interface ImageInfo {
  name: string;
  manifest: string;
  configDigest: string;
  /** Layer diff_ids, bottom first. */
  layers: string[];
  config: { Entrypoint?: string[] | null; Cmd?: string[] | null; Env?: string[] | null; WorkingDir?: string | null; User?: string | null };
  /** The config's User resolved against the image's /etc/passwd and /etc/group: [uid, gid]. */
  userIds?: [number, number];
  /** What the import could not keep, and why (e.g. device nodes without root). */
  notes?: string[];
}
export interface ImportProgress {
  /** Layers the store did not have yet, and how many of them are done. */
  layers: number;
  layersDone: number;
  /** Compressed bytes of those layers, and how many were read. */
  bytes: number;
  bytesDone: number;
}
export interface ImportOptions {
  /** Called about ten times a second while importing, and once at the end. */
  onProgress?: (p: ImportProgress) => void;
  /** Cancels the import: it rejects (ERR_CAGETTE_IMAGE, "import cancelled"), nothing is left. */
  signal?: AbortSignal;
  /** Also keep the manifest, config and compressed layers exactly as verified (an OCI layout
   * or a registry only), as an image must have to be the base (FROM) of a build. */
  keepBlobs?: boolean;
}
/** How a registry is reached (pull(), and build()'s `pull`). */
export interface RegistryOptions {
  /** 'os/arch[/variant]' to pick from a multi-platform image (default: this host's). */
  platform?: string;
  /** Registries ('host[:port]') reached over plain HTTP (loopback ones always are). */
  insecureRegistries?: string[];
  /** PEM files of certificate authorities to trust besides the system's. */
  caFiles?: string[];
  /** [user, password]; else `authFile`, else the user's auth.json or docker config.json. */
  credentials?: [string, string];
  authFile?: string;
  /** Per request, in milliseconds (default 30000). */
  timeout?: number;
}
export interface PullOptions extends ImportOptions, RegistryOptions {}

/** What build() reports, in order: each step as it starts, 'cached' after a step that came
 * from the build cache, 'pulling' as a FROM image is pulled (with `pull`), 'done' once the
 * image is recorded. */
export type BuildEvent =
  | { kind: 'step'; /** 1-based. */ n: number; total: number; /** The Dockerfile's line (1-based). */ line: number; /** The instruction as written (its first line). */ text: string }
  | { kind: 'cached' }
  | { kind: 'pulling'; /** The FROM image's reference. */ reference: string }
  | { kind: 'done'; /** The manifest digest. */ manifest: string };

export interface BuildOptions {
  /** The name the image is recorded under ('name:tag'); without one, its digest only. */
  tag?: string;
  /** The Dockerfile (default CONTEXT/Dockerfile). */
  dockerfile?: string;
  /** Values of the Dockerfile's ARGs. */
  buildArgs?: Record<string, string | number | boolean>;
  /** Build up to this stage (its name or index) instead of the last. */
  target?: string | number;
  /** RUN steps on the host's network (the default, like Docker's) or with none. */
  network?: 'host' | 'none';
  /** Run every step even when the cache has it. */
  noCache?: boolean;
  /** Memory limit of each RUN step, e.g. '256M' or a number of bytes. */
  memory?: number | string;
  /** CPU limit of each RUN step, in CPUs. */
  cpus?: number;
  /** Process limit of each RUN step. */
  pids?: number;
  /** Wall-clock limit of each RUN step, in milliseconds. */
  stepTimeout?: number;
  /** Pull a FROM image the store lacks (or holds without its blobs): true, or how to reach its
   * registry. Without it such a base is an error. */
  pull?: boolean | RegistryOptions;
  /** Called with each event, in order, a little after it happens. Throwing cancels the build
   * (the promise rejects with what was thrown). */
  onProgress?: (e: BuildEvent) => void;
  /** Cancels the build: a running RUN step is killed with its sandbox, the promise rejects with
   * an AbortError and nothing is tagged (once the image is recorded it is too late). */
  signal?: AbortSignal;
}

/** How build() rejects when the image could not be built (nothing is tagged). */
export interface BuildError extends Error {
  code: 'ERR_CAGETTE_BUILD';
  /** What failed: the Dockerfile ('parse'), an instruction that cannot be carried out as
   * written, a RUN step that did not exit 0 ('step'), a step's sandbox, the store, a file. */
  reason: 'parse' | 'instruction' | 'step' | 'sandbox' | 'image' | 'io' | 'other';
  /** The Dockerfile, and its line (1-based), when the error is about one. */
  file: string | null;
  line: number | null;
  column: number | null;
  /** For a failed RUN step: its command, how it ended ('exited with status 3', ...), its
   * exit status (null when it did not exit) and what it wrote (stdout then stderr, the last
   * 8 KiB; the message shows it too). */
  command: string | null;
  verdict: string | null;
  exitCode: number | null;
  output: string | null;
}

export interface SandboxEntry {
  name: string;
  /** The host pid of the sandbox's init. */
  pid: number;
  /** The host pid of the process that started it. */
  hostPid: number;
  /** When it started, in seconds since the Unix epoch. */
  started: number;
  argv: string[];
  memoryBytes: number | null;
  cpuS: number | null;
}

/** The caller's running named sandboxes (started with `name`), oldest first. */
export declare function list(): SandboxEntry[];

export declare function login(registry: string, username: string, password: string, authFile?: string): string;

/** cagette's image store. Its methods reject with a TypeError ERR_INVALID_ARG_TYPE for a name
 * or path that is no string. */
export declare class ImageStore {
  /** Without a path (or with null): the default store. */
  constructor(path?: string | null);
  readonly path: string | null;
  /** Imports an OCI layout directory, a docker-save archive or a plain layer tar. */
  importImage(source: string, name: string, options?: ImportOptions): Promise<ImageInfo>;
  pull(reference: string, options?: PullOptions): Promise<ImageInfo>;
  /** Builds an image from a Dockerfile and a context directory; rejects with a BuildError,
   * or an AbortError. */
  build(context: string, options?: BuildOptions): Promise<ImageInfo>;
  list(): Promise<ImageInfo[]>;
  get(name: string): Promise<ImageInfo>;
  remove(name: string): Promise<void>;
  gc(): Promise<number>;
  unpack(name: string, dest: string): Promise<void>;
}
