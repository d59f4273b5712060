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
