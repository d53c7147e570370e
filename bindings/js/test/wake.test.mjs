// A release wakes the waiters in line at once (Channel.watch in src/pool.js):
// with a retry interval of ten minutes, their own looks would come minutes
// later, capped by the timeout; here the lock passes within moments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { acquire, status } from '../src/index.js';
import { scratch, tree, cli, cliHold, NO_CLI, until } from './helpers.mjs';

// The head looks at the lock a quarter of a retry interval apart, the
// interval capped by the timeout: here every 100 s. Without the wake-up a turn would take that
// long; with it, milliseconds. The bound is far from both.
const SLOW = { retryInterval: 600, verificationDelay: 0, timeout: 400 };
const WOKEN_WITHIN_MS = 10_000;

/** Resolves once `count` waiters stand in the queue of `name` in `dir`. */
const inLine = (dir, name, count) =>
  until(() => tree(dir).filter((n) => new RegExp(`^${name}\\.queue/[0-9]+$`).test(n)).length >= count, `${count} waiter(s) in line`);

test('a release wakes the head of the line at once, whatever its retry interval', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'wake.lock');
  const token = cliHold(path);
  const waiting = acquire(path, SLOW);
  await inLine(dir, 'wake.lock', 1);
  const released = performance.now();
  assert.equal(cli('release', path, token).status, 0);
  const guard = await waiting;
  const took = performance.now() - released;
  assert.ok(took < WOKEN_WITHIN_MS, `took the lock ${Math.round(took)} ms after the release`);
  assert.equal((await status(path)).holder.token, guard.token);
  await guard.release();
});

test('the waiters behind the head are woken too, and each takes its turn', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'line.lock');
  const token = cliHold(path);
  const first = acquire(path, SLOW);
  await inLine(dir, 'line.lock', 1);
  const second = acquire(path, SLOW);
  await inLine(dir, 'line.lock', 2);
  const released = performance.now();
  assert.equal(cli('release', path, token).status, 0);
  const a = await first;
  await a.release();
  const b = await second;
  const took = performance.now() - released;
  assert.ok(took < WOKEN_WITHIN_MS, `both turns took ${Math.round(took)} ms`);
  assert.ok(b.fence > a.fence, 'in turn');
  await b.release();
  assert.equal(await status(path), null);
});
