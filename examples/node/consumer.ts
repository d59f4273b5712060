// A TypeScript consumer of the cagette package: CI checks it with `tsc --strict`.
import { run, spawn, bind, tmpfs, probe, type Result, type CagetteError, type SandboxProcess } from '../../bindings-node/lib/index.js';

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
}

void main();
