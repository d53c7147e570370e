#!/usr/bin/env node
// Uncontended acquire+release through the package, beside a plain Node loop
// doing the same file steps (exclusive create + write, read back, unlink) on
// the same directory. Medians after warm-up.
//
//   node bench.mjs [--dir /dev/shm] [--iterations 500] [--quick]
//
// Runs itself once per instantiation mode (configure() is once per process).
//
//   node bench.mjs --contend [--dir /dev/shm] [--iterations 50] [--retry-interval S]
//
// Hand-off instead: 1, 4 and 8 processes each take one lock ITERATIONS
// times and hold it 1 ms (verificationDelay 0, the default retry interval
// unless given); one process without the lock is the ceiling.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const root = flag('--dir', '/dev/shm');
const iterations = Number(flag('--iterations', '500'));
const quick = args.includes('--quick');
const mode = flag('--mode', null);

function median(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return s[s.length >> 1];
}
function pct(samples, p) {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}
const us = (ms) => `${(ms * 1000).toFixed(1)} µs`;

async function measure(n, warmup, step) {
  for (let i = 0; i < warmup; i++) await step(i);
  const samples = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await step(i);
    samples.push(performance.now() - t);
  }
  return samples;
}

if (args.includes('--contend')) {
  await contend();
  process.exit(0);
}

if (mode === null) {
  // The parent: one child per instantiation mode, then the summary.
  const results = [];
  for (const m of ['sync', 'async']) {
    const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--mode', m, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (run.status !== 0) process.exit(run.status ?? 1);
    results.push(...JSON.parse(run.stdout));
  }
  const { loadavg, cpus } = await import('node:os');
  console.log(`uuidlock bench: ${iterations} iterations per row after warm-up, on ${root}; ${process.version}, ${cpus().length} cores, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log('Each row is interleaved with the plain Node loop (exclusive create + write, read back, unlink), so both see the same load.');
  console.log('| what | instantiation | median | p90 | plain loop median | × plain |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results) {
    const ratio = r.plain === null ? '' : (r.median / r.plain).toFixed(1);
    console.log(`| ${r.name} | ${r.mode} | ${us(r.median)} | ${r.n > 1 ? us(r.p90) : ''} | ${r.plain === null ? '' : us(r.plain)} | ${ratio} |`);
  }
  process.exit(0);
}

const { acquire, configure, status, shutdown } = await import('./src/index.js');
configure({ instantiation: mode, wasi: flag('--wasi', 'direct') });
const dir = mkdtempSync(join(root, 'uuidlock-bench-'));
const rows = [];
const path = join(dir, 'bench.lock');
const plainPath = join(dir, 'plain.lock');

// The same file steps, in plain Node: exclusive create + write, read back, unlink.
function plainStep() {
  const token = randomUUID();
  const fd = openSync(plainPath, 'wx');
  writeSync(fd, token);
  closeSync(fd);
  if (readFileSync(plainPath, 'utf8') !== token) throw new Error('read back another token');
  unlinkSync(plainPath);
}

/** `step` and the plain loop, interleaved, so that both see the same load
 * (the machine is shared); their medians and the ratio of the medians. */
async function paired(name, n, warmup, step) {
  for (let i = 0; i < warmup; i++) {
    plainStep();
    await step();
  }
  const ours = [];
  const plain = [];
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    plainStep();
    plain.push(performance.now() - t);
    t = performance.now();
    await step();
    ours.push(performance.now() - t);
  }
  rows.push({ mode, name, median: median(ours), p90: pct(ours, 0.9), plain: median(plain), n });
}

try {
  // The plain loop alone, before any worker runs.
  for (let i = 0; i < 200; i++) plainStep();
  const alone = [];
  for (let i = 0; i < iterations; i++) {
    const t = performance.now();
    plainStep();
    alone.push(performance.now() - t);
  }
  rows.push({ mode, name: 'plain Node loop alone (no worker running)', median: median(alone), p90: pct(alone, 0.9), plain: median(alone), n: iterations });

  // The first call of a process: compile, start a worker, instantiate.
  const cold = performance.now();
  await status(path);
  const first = performance.now() - cold;
  rows.push({ mode, name: 'first call (compile, start a worker, instantiate)', median: first, p90: first, plain: null, n: 1 });

  const cycle = (options) => async () => {
    const g = await acquire(path, options);
    await g.release();
  };
  await paired('acquire+release, verificationDelay 0', iterations, 300, cycle({ timeout: 0, verificationDelay: 0 }));
  await paired('acquire+release, verificationDelay 0, queue off', iterations, 100, cycle({ timeout: 0, verificationDelay: 0, queue: false }));
  await paired('status (one round trip to the worker)', iterations, 100, () => status(path));
  if (!quick) {
    // The default 0.1 s verification delay dominates everything else.
    await paired('acquire+release, default verificationDelay 0.1 s', 20, 2, cycle({ timeout: 0 }));
    // A cold worker for every call: what keeping workers warm saves.
    await paired('acquire+release, new worker each time', 10, 1, async () => {
      await shutdown();
      await cycle({ timeout: 0, verificationDelay: 0 })();
    });
  }
} finally {
  await shutdown();
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(rows));

/** The --contend table: processes started together, each taking the lock
 * `--iterations` times; acquisitions per second from the first attempt to the
 * last release, waits, and the hand-off gap (one holder's release to the
 * next one's entry). */
async function contend() {
  const n = Number(flag('--iterations', '50'));
  const retry = flag('--retry-interval', null);
  const index = new URL('./src/index.js', import.meta.url).href;
  const worker = `
import { acquire } from ${JSON.stringify(index)};
import { appendFileSync } from 'node:fs';
const [lock, log, at, locked] = process.argv.slice(1);
const options = { timeout: 600, verificationDelay: 0${retry === null ? '' : `, retryInterval: ${Number(retry)}`} };
const now = () => performance.timeOrigin + performance.now();
if (locked === 'yes') await (await acquire(lock + '.warm-up', options)).release();
while (Date.now() < Number(at)) await new Promise((r) => setTimeout(r, 1));
const rows = [];
for (let i = 0; i < ${n}; i++) {
  const asked = now();
  const g = locked === 'yes' ? await acquire(lock, options) : null;
  const entered = now();
  while (now() < entered + 1) {} // the 1 ms critical section
  const left = now();
  await g?.release();
  rows.push([asked, entered, left].join(' '));
}
appendFileSync(log, rows.join('\\n') + '\\n');`;
  const { spawn } = await import('node:child_process');
  const run = async (processes, locked) => {
    const dir = mkdtempSync(join(root, 'uuidlock-contend-'));
    const log = join(dir, 'log');
    writeFileSync(log, '');
    const at = String(Date.now() + 1000 + 150 * processes);
    try {
      const codes = await Promise.all(
        Array.from({ length: processes }, () => new Promise((resolve) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', worker, join(dir, 'x.lock'), log, at, locked ? 'yes' : 'no'], { stdio: ['ignore', 'inherit', 'inherit'] });
          child.on('exit', resolve);
        })),
      );
      if (codes.some((code) => code !== 0)) throw new Error(`a contending process failed: exit codes ${codes}`);
      const rows = readFileSync(log, 'utf8').trim().split('\n').map((line) => line.split(' ').map(Number));
      const span = Math.max(...rows.map((r) => r[2])) - Math.min(...rows.map((r) => r[0]));
      const waits = rows.map(([asked, entered]) => entered - asked);
      const byEntry = [...rows].sort((a, b) => a[1] - b[1]);
      const gaps = byEntry.slice(1).map((r, i) => r[1] - byEntry[i][2]);
      if (locked && gaps.some((gap) => gap < 0)) throw new Error('two processes held the lock at once');
      return { rate: rows.length / (span / 1000), waits, gaps };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const ms = (x) => x.toFixed(2);
  console.log(`uuidlock bench --contend: ${n} acquisitions per process, 1 ms held, verificationDelay 0, retryInterval ${retry ?? 'default (0.1 s)'}, on ${root}; ${process.version}`);
  console.log('| processes | acq/s | × ceiling | wait p50 ms | wait max ms | gap p50 ms |');
  console.log('|---|---|---|---|---|---|');
  const ceiling = await run(1, false);
  console.log(`| ceiling: 1, no lock | ${ceiling.rate.toFixed(0)} | 1.00 | | | |`);
  for (const processes of [1, 4, 8]) {
    const r = await run(processes, true);
    const gap = r.gaps.length ? ms(median(r.gaps)) : '';
    console.log(`| ${processes} | ${r.rate.toFixed(0)} | ${(r.rate / ceiling.rate).toFixed(2)} | ${ms(median(r.waits))} | ${ms(Math.max(...r.waits))} | ${gap} |`);
  }
}
