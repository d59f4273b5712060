// A TypeScript consumer of the cagette package: CI checks it with `tsc --strict`.
import { run, spawn, bind, tmpfs, probe, ImageStore, type Result, type CagetteError, type SandboxProcess, type BuildEvent, type BuildError, type ImageInfo } from '../../bindings-node/lib/index.js';

async function main(): Promise<void> {
  const r: Result = await run(['npm', 'ci'], {
    cwd: '/work',
    memory: '2G',
    network: 'none',
    timeout: 600_000,
    mounts: [bind(process.cwd(), '/work', { readOnly: false }), tmpfs('/tmp', { size: '256M' })],
  });
  const code: number | null = r.exitCode;
  const peak: number | null = r.usage.memoryPeakBytes;
  console.log(code, r.verdict, peak, r.stdout?.toString());

  // A named sandbox, and a command run in it: its cwd is a directory inside the sandbox.
  const web: SandboxProcess = spawn(['sleep', '3600'], { name: 'web', cpus: 0.5, cpuPeriod: 50, capDrop: ['CAP_NET_RAW'], oomPolicy: 'continue', mounts: [{ type: 'cgroup', destination: '/sys/fs/cgroup' }] });
  const inWeb: Result = await run(['ls'], { execIn: 'web', cwd: '/tmp', tty: true });
  console.log(inWeb.stdout?.toString());
  web.kill('SIGKILL');

  const p: SandboxProcess = spawn(['make'], { signal: AbortSignal.timeout(30_000) });
  if (p.stdout) for await (const chunk of p.stdout) process.stdout.write(chunk as Buffer);
  const result = await p.exited;
  if (result.verdict === 'oom_killed' || result.verdict === 'timed_out') console.log(result.signal, result.timeoutLimit);

  try {
    await run(['/no/such']);
  } catch (e) {
    const err = e as CagetteError;
    if (err.code === 'ERR_CAGETTE_SETUP') console.log(err.step, err.errno, err.path, err.hint);
  }
  console.log(probe().cgroup);

  // An image from a Dockerfile; its FROM image imported with its blobs kept.
  const store = new ImageStore('/tmp/store');
  await store.importImage('./busybox-oci', 'busybox:1', { keepBlobs: true });
  const show = (e: BuildEvent): void => {
    if (e.kind === 'step') console.log(`${e.n}/${e.total} line ${e.line}: ${e.text}`);
    else if (e.kind === 'done') console.log(e.manifest);
  };
  try {
    const image: ImageInfo = await store.build('./app', { tag: 'app:1', buildArgs: { VERSION: 2 }, network: 'none', memory: '512M', stepTimeout: 600_000, onProgress: show, signal: AbortSignal.timeout(3_600_000) });
    console.log(image.manifest);
  } catch (e) {
    const err = e as BuildError;
    if (err.code === 'ERR_CAGETTE_BUILD') console.log(err.reason, err.line, err.exitCode, err.output);
  }
}

void main();
