// Median spawn-to-exit of /bin/true through `await run()` (used by benches/bindings.sh).
import { createRequire } from 'node:module';
const { run } = createRequire(import.meta.url)('../lib/index.js');
const n = Number(process.argv[2] || 100);
const opts = { stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' };
for (let i = 0; i < 20; i++) await run(['/bin/true'], opts);
const t = [];
for (let i = 0; i < n; i++) {
  const s = process.hrtime.bigint();
  await run(['/bin/true'], opts);
  t.push(Number(process.hrtime.bigint() - s) / 1e6);
}
t.sort((a, b) => a - b);
console.log(t[Math.floor(n / 2)].toFixed(4));
