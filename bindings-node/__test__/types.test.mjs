// The TypeScript types: a consumer using the whole API passes `tsc --strict`, and a wrong use
// is rejected (so the check can fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, '..', 'node_modules', '.bin', 'tsc');
const flags = ['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(here, '..', 'node_modules', '@types')];

test('tsc --strict accepts the example consumer', () => {
  const r = spawnSync(tsc, [...flags, path.join(here, '..', '..', 'examples', 'node', 'consumer.ts')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

// Every SandboxSpec field index.js passes through, and every kind of mount, in object literals
// (so that TypeScript's excess-property check sees each key).
const everyOption = `
const mounts: Mount[] = [
  { type: 'bind', source: '/usr', destination: '/u', readOnly: true, recursive: false, flags: { nosuid: true, noexec: true, atime: 'noatime', propagation: 'rslave' } },
  { type: 'tmpfs', destination: '/t', size: '1M', mode: 0o700, flags: { atime: 'strictatime' }, source: 'scratch' },
  { type: 'dev', destination: '/d', size: '64K', flags: { atime: 'relatime' } },
  { type: 'sysfs', destination: '/sys' },
  { type: 'mqueue', destination: '/dev/mqueue' },
  { type: 'cgroup', destination: '/sys/fs/cgroup', readOnly: false },
];
const seccomp: OciSeccomp = { defaultAction: 'SCMP_ACT_ALLOW', defaultErrnoRet: 1, architectures: ['SCMP_ARCH_X86_64'], syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, args: [{ index: 0, value: 1, valueTwo: 0, op: 'SCMP_CMP_EQ' }] }] };
validate({
  tty: true, entrypoint: ['/bin/sh', '-c'], userns: 'host', followSymlinks: true, devices: ['/dev/fuse'],
  capabilities: ['CAP_CHOWN'], capAdd: ['CAP_NET_RAW'], capDrop: ['CAP_MKNOD'], ambientCapabilities: true,
  seccomp: 'none', seccompAllow: ['ptrace'], seccompDeny: ['mkdir'], seccompKill: true, allowUserNamespaces: true,
  landlock: { writable: ['/tmp'] }, oomPolicy: 'continue', cpus: 0.5, cpuPeriod: 50,
  ioMax: [{ device: '8:0', rbps: '10M', wbps: 1 << 20, riops: 100, wiops: null }], umask: 0o077, rootfsPropagation: 'rshared', mounts,
});
validate({ seccomp, oomPolicy: 'kill_job', userns: 'auto', entrypoint: null, landlock: null });
const r: Promise<Result> = run(['true'], { execIn: 'web', cwd: '/tmp', tty: true });
export { r };
`;

function typecheck(source) {
  const dir = mkdtempSync(path.join(tmpdir(), 'cagette-tsc-'));
  try {
    const lib = path.join(here, '..', 'lib', 'index.js').replaceAll('\\', '/');
    writeFileSync(path.join(dir, 'use.ts'), `import { run, validate, type Mount, type OciSeccomp, type Result } from ${JSON.stringify(lib)};\n${source}`);
    return spawnSync(tsc, [...flags, path.join(dir, 'use.ts')], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('tsc --strict accepts every option and mount kind', () => {
  const r = typecheck(everyOption);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("tsc --strict rejects options of the wrong shape (camelCased enum values, capabilities' short names, units)", () => {
  const bad = [
    "validate({ oomPolicy: 'killJob' });",
    "validate({ capAdd: ['net_raw'] });",
    "validate({ cpus: 1, cpuPeriod: '100ms' });",
    "validate({ mounts: [{ type: 'cgroup', destination: '/c', readOnly: 'no' }] });",
    "validate({ mounts: [{ type: 'bind', source: '/a', destination: '/b', flags: { atime: 'never' } }] });",
    "validate({ rootfsPropagation: 'r_shared' });",
  ];
  const r = typecheck(bad.join('\n') + '\nexport {};\n');
  assert.notEqual(r.status, 0);
  // One error on each line (the import is line 1).
  const lines = [...r.stdout.matchAll(/use\.ts\((\d+),\d+\): error TS/g)].map((m) => Number(m[1]));
  assert.deepEqual([...new Set(lines)], bad.map((_, i) => i + 2), r.stdout);
});

test('tsc --strict rejects a wrong use', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cagette-tsc-'));
  try {
    const lib = path.join(here, '..', 'lib', 'index.js').replaceAll('\\', '/');
    writeFileSync(path.join(dir, 'bad.ts'), `import { run } from ${JSON.stringify(lib)};\nconst r = await run(['true']);\nconst s: string = r.exitCode;\nexport {};\n`);
    const r = spawnSync(tsc, [...flags, path.join(dir, 'bad.ts')], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stdout, /Type 'number \| null' is not assignable to type 'string'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
