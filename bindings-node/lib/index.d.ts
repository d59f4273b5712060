import { EventEmitter } from 'node:events';
// Public types of the `cagette` package. The native layer's types (native.d.ts) are generated
// by napi-rs from the Rust code.
import type { Readable, Writable } from 'node:stream';

/** How a job ended: the same strings as `cagette run --report`. */
export type Verdict = 'exited' | 'signaled' | 'oom_killed' | 'seccomp_killed' | 'timed_out' | 'network_lost';

/** A standard stream: a pipe (default for spawn), /dev/null, the parent's, or an fd. */
export type StdioOption = 'pipe' | 'ignore' | 'inherit' | number;

export interface BindMount {
  type: 'bind';
  source: string;
  destination: string;
  readOnly?: boolean;
  recursive?: boolean;
}
export interface TmpfsMount {
  type: 'tmpfs';
  destination: string;
  size?: number | string | null;
  mode?: number | null;
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
export interface DevMount {
  type: 'dev';
  destination: string;
}
export type Mount = BindMount | TmpfsMount | OverlayMount | ProcMount | DevMount;

export type NamespaceMode = 'new' | 'host' | { join: string };

/** Options: child_process-style ones, then the sandbox's (fields of the core's SandboxSpec). */
export interface Options {
  /** Working directory inside the sandbox (default '/'). */
  cwd?: string;
  /** Environment variables, on top of PATH, HOME and TERM (or the host's with inheritEnv). */
  env?: Record<string, string>;
  /** Wall-clock limit in milliseconds: the whole sandbox is killed (verdict 'timed_out'). */
  timeout?: number;
  /** CPU-time limit in milliseconds for the whole job (verdict 'timed_out', limit 'cpu'). */
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
  cpuWeight?: number;
  /** Maximum number of processes and threads. */
  pids?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  ioWeight?: number;
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
  /** A directory to use as the root file system (default: the host's / read-only). */
  rootfs?: string;
  rootfsWritable?: boolean;
  inheritEnv?: boolean;
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
  capabilities?: string[];
  noNewPrivs?: boolean;
  rlimits?: Array<{ resource: string; soft: number; hard: number }>;
  passFds?: Array<{ host: number; sandbox: number }>;
  /** Register the sandbox under this name while it runs (list() shows it; execIn joins it). */
  name?: string;
  /** Run the command in the running sandbox of this name (as `docker exec`). */
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
 * 'ERR_CAGETTE_SETUP', syscall 'spawn CMD' and the details above. */
export interface CagetteError extends Error {
  code: 'ERR_CAGETTE_SETUP' | 'ERR_CAGETTE_LIMIT_UNSUPPORTED' | 'ERR_CAGETTE_INVALID_OPTION' | 'ERR_CAGETTE_IMAGE' | 'ERR_CAGETTE_BUILD' | 'ERR_CAGETTE' | 'ABORT_ERR' | 'ENOENT' | 'EACCES' | string;
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

export declare class ImageStore {
  constructor(path?: string);
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
