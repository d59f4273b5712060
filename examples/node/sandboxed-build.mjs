#!/usr/bin/env node
// Runs a project's build in a sandbox: sources read-only, one writable output directory, no
// network, memory and time limits; prints the usage report.
//
//   node examples/node/sandboxed-build.mjs [PROJECT_DIR] [-- BUILD COMMAND...]
//   (default: the current directory, and `sh -c 'ls -R . > /out/listing.txt'`)
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { run, bind, tmpfs } = require('../../bindings-node/lib/index.js');

const args = process.argv.slice(2);
const dash = args.indexOf('--');
const project = path.resolve(dash === 0 ? '.' : args[0] ?? '.');
const command = dash >= 0 ? args.slice(dash + 1) : ['sh', '-c', 'ls -R . > /out/listing.txt && echo built'];
const out = mkdtempSync(path.join(tmpdir(), 'cagette-build-out-'));
mkdirSync(out, { recursive: true });

const result = await run(command, {
  cwd: '/src',
  mounts: [
    bind(project, '/src', { readOnly: true }), // sources: read-only
    bind(out, '/out'), // the one writable output directory
    tmpfs('/tmp', { size: '512M' }), // scratch space, discarded
  ],
  network: 'none',
  memory: '2G',
  pids: 512,
  timeout: 10 * 60_000,
  stdout: 'inherit',
  stderr: 'inherit',
});

const u = result.usage;
console.log(`\nverdict: ${result.verdict}${result.exitCode !== null ? ` (exit ${result.exitCode})` : ` (${result.signal})`}`);
console.log(`wall ${u.wallTimeS.toFixed(2)}s, cpu ${(u.cpuUserS + u.cpuSystemS).toFixed(2)}s, peak memory ${(u.memoryPeakBytes / 2 ** 20).toFixed(1)} MiB, peak pids ${u.pidsPeak}`);
console.log(`output in ${out}`);
process.exitCode = result.exitCode ?? 1;
