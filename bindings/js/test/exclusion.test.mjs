// Cross-process exclusion: several node processes increment a counter file
// under the lock, each a non-atomic read-modify-write; the count is exact and
// the fences rise in the order the critical sections ran.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runNode, scratch, tree, INDEX } from './helpers.mjs';

const PROCESSES = 3;
const ITERATIONS = 10;

const worker = `
import { acquire } from ${JSON.stringify(INDEX)};
import { readFileSync, writeFileSync, appendFileSync } from 'node:fs';
const [lock, counter, log, me] = process.argv.slice(1);
for (let i = 0; i < ${ITERATIONS}; i++) {
  const g = await acquire(lock, { verificationDelay: 0, retryInterval: 0.01, timeout: 120, prefix: 'p' + me + '-' });
  const n = Number(readFileSync(counter, 'utf8'));
  await new Promise((r) => setTimeout(r, 2)); // widen the window a lost update needs
  writeFileSync(counter, String(n + 1));
  appendFileSync(log, g.fence + ' ' + me + ' ' + (n + 1) + '\\n');
  await g.release();
}`;

test(`${PROCESSES} processes x ${ITERATIONS} increments under the lock`, async (t) => {
  const dir = scratch(t);
  const lock = join(dir, 'counter.lock');
  const counter = join(dir, 'counter');
  const log = join(dir, 'log');
  writeFileSync(counter, '0');
  writeFileSync(log, '');
  const runs = await Promise.all(
    Array.from({ length: PROCESSES }, (_, me) => runNode(worker, [lock, counter, log, String(me)])),
  );
  for (const run of runs) assert.equal(run.code, 0, run.stderr);
  assert.equal(Number(readFileSync(counter, 'utf8')), PROCESSES * ITERATIONS, 'no update was lost');
  const rows = readFileSync(log, 'utf8').trim().split('\n').map((line) => line.split(' ').map(Number));
  assert.equal(rows.length, PROCESSES * ITERATIONS);
  rows.forEach(([, , value], i) => assert.equal(value, i + 1, 'each section saw the previous one\'s write'));
  for (let i = 1; i < rows.length; i++) assert.ok(rows[i][0] > rows[i - 1][0], `fence ${rows[i][0]} after ${rows[i - 1][0]}`);
  const writers = new Set(rows.map(([, me]) => me));
  assert.equal(writers.size, PROCESSES, 'every process took the lock');
  // Only the shared counters stay (fencing, queue tickets, last served):
  // no lock, no queue entry, no staging file.
  const shared = /^counter\.lock\.(fence\/.*|queue\/|queue\/tickets\/.*|queue\/served)$/;
  assert.deepEqual(tree(dir).filter((n) => n.startsWith('counter.lock') && !shared.test(n)), [], 'nothing left');
});
