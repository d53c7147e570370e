// Waiting never blocks the event loop: the component runs in a worker
// thread, so a 10 ms interval keeps firing while acquire waits 2 s for a
// lock the native CLI holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { acquire, status } from '../src/index.js';
import { scratch, cli, cliHold, NO_CLI } from './helpers.mjs';

test('a 10 ms interval keeps ticking while acquire waits 2 s', { skip: NO_CLI }, async (t) => {
  const path = join(scratch(t), 'busy.lock');
  // Warm up: the first call starts the worker (not what is measured).
  assert.equal(await status(path), null);
  const token = cliHold(path);
  let ticks = 0;
  let longestGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks += 1;
  }, 10);
  const started = performance.now();
  try {
    await assert.rejects(acquire(path, { timeout: 2, retryInterval: 0.05, verificationDelay: 0 }), (e) => {
      assert.equal(e.code, 'timeout');
      assert.ok(e.message.includes(`held by ${token}`), e.message);
      return true;
    });
  } finally {
    clearInterval(timer);
  }
  const waited = performance.now() - started;
  assert.ok(waited >= 1950, `waited ${Math.round(waited)} ms`);
  // 2 s of 10 ms ticks is 200. A wait that blocked the loop would fire
  // next to none and stall it for the whole 2 s; the bounds are that far
  // from it, so that a test run on a loaded machine (where the CI suite
  // keeps both cores busy) is not taken for a blocked loop.
  assert.ok(ticks >= 100, `only ${ticks} ticks in ${Math.round(waited)} ms`);
  assert.ok(longestGap < 1000, `the loop stalled for ${Math.round(longestGap)} ms`);
  t.diagnostic(`${ticks} ticks in ${Math.round(waited)} ms, longest gap ${Math.round(longestGap)} ms`);
  assert.equal(cli('release', path, token).status, 0);
});
