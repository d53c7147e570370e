// An acquire cut short (an AbortSignal, the process exiting, a signal)
// leaves nothing beside the lock: it ran as acquire-as with a fresh token,
// and is undone with abandon(path, token).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { acquire, status } from '../src/index.js';
import { scratch, tree, cli, cliHold, NO_CLI, INDEX, sleep, until } from './helpers.mjs';

/** The tree of `dir` while the CLI holds `path`, with a waiter's queue
 * entry possible; what must be there again once the waiter is gone. */
function holdAndSnapshot(dir, path) {
  const token = cliHold(path);
  return { token, before: tree(dir) };
}

/** The directory's tree without the queue's shared counters, which the
 * first waiter made and which stay, as the fencing counter does
 * (`<lock>.queue/tickets/N`, `<lock>.queue/served`): a waiter's own entry,
 * `<lock>.queue/<ticket>`, must be gone. */
function withoutEmptyQueue(names, lock) {
  const q = `${lock}.queue/`;
  return names.filter((n) => !(n === q || n === `${q}served` || n.startsWith(`${q}tickets/`)));
}

test('an AbortSignal stops a waiting acquire at once and leaves nothing beside the lock', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'abort.lock');
  const { token, before } = holdAndSnapshot(dir, path);
  for (const queue of [true, false]) {
    const controller = new AbortController();
    const waiting = acquire(path, { signal: controller.signal, retryInterval: 0.05, verificationDelay: 0, queue });
    // Waiting: in line, where it queues (the first call of a file starts
    // the worker, which takes a while on a loaded machine: looked for, not
    // timed); else after a few of its retries.
    if (queue) await until(() => tree(dir).some((n) => /^abort\.lock\.queue\/[0-9]+$/.test(n)), 'a queue entry while waiting');
    await sleep(400);
    const aborted = performance.now();
    controller.abort();
    await assert.rejects(waiting, (e) => e.name === 'AbortError');
    assert.ok(performance.now() - aborted < 1000, `stopped in ${Math.round(performance.now() - aborted)} ms`);
    assert.deepEqual(withoutEmptyQueue(tree(dir), 'abort.lock'), withoutEmptyQueue(before, 'abort.lock'), `queue: ${queue}`);
    assert.equal((await status(path)).holder.token, token, 'the holder is untouched');
  }
  // The reason given is the rejection.
  const controller = new AbortController();
  const waiting = acquire(path, { signal: controller.signal, retryInterval: 0.05 });
  await sleep(200);
  const reason = new Error('changed my mind');
  controller.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
  assert.equal(cli('release', path, token).status, 0);
});

test('an already aborted signal rejects before anything runs', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'pre.lock');
  await assert.rejects(acquire(path, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  assert.deepEqual(tree(dir), []);
});

test('AbortSignal.timeout works as a deadline, and the lock is taken if free', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'deadline.lock');
  const g = await acquire(path, { signal: AbortSignal.timeout(5000), verificationDelay: 0 });
  assert.equal(await g.holds(), true);
  await g.release();
});

async function childWaiting(path, how) {
  const script = `import { acquire } from ${JSON.stringify(INDEX)};
    acquire(process.argv[1], { retryInterval: 0.05, verificationDelay: 0 }).then(() => console.log('acquired?!'), (e) => console.log('rejected', e.code));
    setTimeout(() => console.log('waiting'), 300);
    ${how === 'exit' ? "setTimeout(() => process.exit(7), 400);" : ''}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await new Promise((resolve) => child.stdout.on('data', () => out.includes('waiting') && resolve()));
  if (how !== 'exit') child.kill(how);
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  return { code, signal, out };
}

test('process.exit() while an acquire waits: undone, nothing left beside the lock', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'exit.lock');
  const { token, before } = holdAndSnapshot(dir, path);
  const { code, out } = await childWaiting(path, 'exit');
  assert.equal(code, 7);
  assert.ok(!out.includes('acquired'), out);
  assert.deepEqual(withoutEmptyQueue(tree(dir), 'exit.lock'), withoutEmptyQueue(before, 'exit.lock'));
  assert.equal(cli('release', path, token).status, 0);
});

test('SIGTERM while an acquire waits: undone, and the process still dies of the signal', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'sig.lock');
  const { token, before } = holdAndSnapshot(dir, path);
  const { signal } = await childWaiting(path, 'SIGTERM');
  assert.equal(signal, 'SIGTERM');
  assert.deepEqual(withoutEmptyQueue(tree(dir), 'sig.lock'), withoutEmptyQueue(before, 'sig.lock'));
  assert.equal(cli('release', path, token).status, 0);
});

test('a lock still held when the process exits is released', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'held.lock');
  const script = `import { acquire, lease } from ${JSON.stringify(INDEX)};
    const g = await acquire(process.argv[1], { timeout: 0, verificationDelay: 0 });
    const l = await lease(process.argv[1] + '2', { timeout: 0, verificationDelay: 0, staleAfter: 5 });
    console.log(g.token, l.token); // and exit without releasing either`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.equal(code, 0);
  assert.match(out, /[0-9a-f-]{36} [0-9a-f-]{36}/);
  assert.deepEqual(tree(dir).filter((n) => !n.includes('.fence')), []);
});
