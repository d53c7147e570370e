// Shared locks (readers and writers) and N-slot semaphores: `{ shared: true }`,
// `{ slots: N }`, `guard.slot`, `holders()`; with another node process and
// the native CLI as the other holders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { acquire, lease, holders, status, holds, release, UuidlockError, MAX_SLOTS } from '../src/index.js';
import { scratch, tree, cli, cliAsync, NO_CLI, runNode, INDEX, sleep, until } from './helpers.mjs';

/** Deterministic and quick: no verification delay, short retries. */
const fast = { verificationDelay: 0, retryInterval: 0.01 };

/** Runs `node -e` with the package as `u`, the lock path as `path`; resolves
 * with its stdout parsed as JSON (its last line). */
async function inChild(t, body, path) {
  const run = await runNode(`import * as u from ${JSON.stringify(INDEX)}; const path = process.argv[1];
    const fast = ${JSON.stringify(fast)};
    ${body}
    await u.shutdown();`, [path]);
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split('\n').at(-1));
}

test('readers hold together; a writer times out while one holds', async (t) => {
  const path = join(realpathSync(scratch(t)), 'rw.lock');
  const first = await acquire(path, { ...fast, timeout: 0, shared: true, prefix: 'r1-' });
  const second = await acquire(path, { ...fast, timeout: 0, shared: true, prefix: 'r2-' });
  assert.equal(first.slot, null, 'slots are a semaphore\'s');
  assert.equal(await first.holds(), true);
  assert.equal(await second.holds(), true);
  assert.ok(second.fence > first.fence);
  // Readers are entries beside the lock file, which is free between acquires.
  assert.equal(await status(path), null);
  const found = await holders(path);
  assert.deepEqual(found.map((h) => [h.slot, h.holder.kind, h.holder.token, h.holder.prefix, h.stale, h.renewed]), [
    [0, 'uuidlock', first.token, 'r1-', false, null],
    [1, 'uuidlock', second.token, 'r2-', false, null],
  ]);
  for (const h of found) assert.ok(h.age >= 0 && h.age < 60 && h.holder.staleAfter === null, JSON.stringify(h));

  // A writer in another process waits for both, and times out.
  const writer = await inChild(t, `
    const started = performance.now();
    try { await u.acquire(path, { ...fast, timeout: 0.3 }); console.log(JSON.stringify({ took: true })); }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, waited: performance.now() - started })); }`, path);
  assert.equal(writer.code, 'timeout', JSON.stringify(writer));
  assert.ok(writer.message.includes('held by 2 shared holders') && writer.message.includes(path), writer.message);
  assert.ok(writer.waited >= 290, `waited ${writer.waited} ms`);
  // In this process a writer would wait for its own readers: refused at once.
  await assert.rejects(acquire(path, { ...fast, timeout: 30 }), (e) => {
    assert.ok(e instanceof UuidlockError);
    assert.equal(e.code, 'already-held');
    assert.ok(e.message.includes('(shared)') && e.message.includes('release it first'), e.message);
    return true;
  });
  assert.equal(await first.holds(), true);

  await first.release();
  const stillOut = await inChild(t, `
    try { await u.acquire(path, { ...fast, timeout: 0 }); console.log(JSON.stringify({ took: true })); }
    catch (e) { console.log(JSON.stringify({ code: e.code })); }`, path);
  assert.equal(stillOut.code, 'timeout', 'one reader is still in');
  await second.release();
  assert.deepEqual(await holders(path), []);
  const w = await acquire(path, { ...fast, timeout: 0 });
  assert.equal(w.slot, null);
  assert.ok(w.fence > second.fence);
  // And readers wait for the writer: in this process refused at once, in another timed out.
  await assert.rejects(acquire(path, { ...fast, timeout: 5, shared: true }), { code: 'already-held' });
  const reader = await inChild(t, `
    try { await u.acquire(path, { ...fast, timeout: 0.2, shared: true }); console.log(JSON.stringify({ took: true })); }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`, path);
  assert.equal(reader.code, 'timeout');
  assert.ok(reader.message.includes(`held by ${w.token}`), reader.message);
  await w.release();
});

test('more readers in one process than idle workers, each on a worker of its own', async (t) => {
  const path = join(scratch(t), 'many.lock');
  const guards = await Promise.all(Array.from({ length: 4 }, () => acquire(path, { ...fast, timeout: 10, shared: true })));
  assert.equal(new Set(guards.map((g) => g.token)).size, 4);
  assert.deepEqual((await holders(path)).map((h) => h.slot), [0, 1, 2, 3]);
  // Released and taken again through the same (warm) workers.
  for (const g of guards) await g.release();
  const again = await acquire(path, { ...fast, timeout: 0, shared: true });
  const more = await acquire(path, { ...fast, timeout: 0, shared: true });
  assert.deepEqual((await holders(path)).map((h) => h.holder.token), [again.token, more.token]);
  await again.release();
  await more.release();
  assert.deepEqual(await holders(path), []);
});

test('a waiting writer goes before readers that arrive after it', async (t) => {
  const path = join(scratch(t), 'fair.lock');
  const early = await acquire(path, { ...fast, timeout: 0, shared: true });
  const writer = runNode(`import { acquire, shutdown } from ${JSON.stringify(INDEX)};
    const g = await acquire(process.argv[1], { verificationDelay: 0, retryInterval: 0.01, timeout: 30 });
    await g.release(); await shutdown(); console.log(g.fence);`, [path]);
  // The waiting writer holds the lock file while it waits for the reader.
  await until(async () => (await status(path)) !== null, 'the lock taken');
  await assert.rejects(acquire(path, { ...fast, timeout: 0.2, shared: true }), { code: 'timeout' });
  await early.release();
  const run = await writer;
  assert.equal(run.code, 0, run.stderr);
  const writerFence = Number(run.stdout.trim());
  assert.ok(writerFence > early.fence, 'a reader\'s fence lies between the writers\' around it');
  const late = await acquire(path, { ...fast, timeout: 0, shared: true });
  assert.ok(late.fence > writerFence);
  await late.release();
});

test('slots: 2 gives slots 0 and 1, and a third holder times out until one leaves', async (t) => {
  const path = join(scratch(t), 'pool.lock');
  const a = await acquire(path, { ...fast, timeout: 0, slots: 2 });
  const b = await acquire(path, { ...fast, timeout: 0, slots: 2 });
  assert.deepEqual(new Set([a.slot, b.slot]), new Set([0, 1]));
  assert.deepEqual((await holders(path)).map((h) => [h.slot, h.holder.token]), [[a.slot, a.token], [b.slot, b.token]].sort());
  const started = performance.now();
  await assert.rejects(acquire(path, { ...fast, timeout: 0.3, slots: 2 }), (e) => {
    assert.equal(e.code, 'timeout');
    assert.ok(e.message.includes('held by 2 shared holders'), e.message);
    return true;
  });
  assert.ok(performance.now() - started >= 290);
  // A waiting holder takes the slot freed.
  const waiting = acquire(path, { ...fast, timeout: 30, slots: 2 });
  await sleep(100);
  const freed = a.slot;
  await a.release();
  const c = await waiting;
  assert.equal(c.slot, freed);
  assert.equal(await a.holds(), false);
  assert.equal(a.slot, freed, 'the slot stays readable after release, as the token does');
  await b.release();
  await c.release();
  assert.deepEqual(await holders(path), []);
  // One slot: slot 0, a lock by another name.
  const only = await acquire(path, { ...fast, timeout: 0, slots: 1 });
  assert.equal(only.slot, 0);
  await assert.rejects(acquire(path, { ...fast, timeout: 0, slots: 1 }), { code: 'timeout' });
  await only.release();
  const biggest = await acquire(path, { ...fast, timeout: 0, slots: MAX_SLOTS });
  assert.equal(MAX_SLOTS, 1024);
  assert.equal(biggest.slot, 0);
  await biggest.release();
});

test('bad modes: shared with slots, slots out of 1..1024, wrong types', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'bad.lock');
  for (const take of [acquire, lease]) {
    await assert.rejects(take(path, { shared: true, slots: 2 }), (e) => {
      assert.ok(e instanceof TypeError, e);
      assert.ok(e.message.includes('shared') && e.message.includes('slots') && e.message.includes('cannot be combined'), e.message);
      return true;
    });
    await assert.rejects(take(path, { shared: true, slots: 0 }), TypeError, 'the conflict is named first');
    for (const slots of [0, 1025, -1, 2 ** 32 + 2]) {
      await assert.rejects(take(path, { ...fast, timeout: 0, slots }), (e) => {
        assert.ok(e instanceof UuidlockError, e);
        assert.equal(e.code, 'invalid-options');
        assert.ok(e.message.includes(`${slots} slots`) && e.message.includes('from 1 to 1024'), e.message);
        assert.ok(!e.message.includes('\n'));
        return true;
      });
    }
    for (const slots of [1.5, NaN, Infinity]) await assert.rejects(take(path, { slots }), RangeError, String(slots));
    for (const slots of ['2', 2n, true, {}]) await assert.rejects(take(path, { slots }), TypeError, String(slots));
    for (const shared of ['yes', 1, {}]) await assert.rejects(take(path, { shared }), TypeError, String(shared));
    await assert.rejects(take(path, { shraed: true }), /did you mean 'shared'/);
  }
  // Explicit defaults are an exclusive lock.
  const g = await acquire(path, { ...fast, timeout: 0, shared: false, slots: null });
  assert.equal(g.slot, null);
  assert.equal((await status(path)).holder.token, g.token);
  await g.release();
  assert.deepEqual(tree(dir).filter((n) => !n.startsWith('bad.lock.fence')), []);
});

test('Symbol.asyncDispose (what `await using` calls) releases a reader and a slot', async (t) => {
  const path = join(scratch(t), 'dispose.lock');
  const r = await acquire(path, { ...fast, timeout: 0, shared: true });
  const s = await acquire(join(scratch(t), 'dispose-pool.lock'), { ...fast, timeout: 0, slots: 3 });
  await r[Symbol.asyncDispose]();
  await s[Symbol.asyncDispose]();
  assert.equal(await r.holds(), false);
  assert.equal(await s.holds(), false);
  assert.deepEqual(await holders(path), []);
});

test('`await using` with a reader, where the runtime has the syntax', async (t) => {
  const path = join(scratch(t), 'using.lock');
  let fn;
  try {
    fn = new Function('acquire', 'path', 'return (async () => { await using g = await acquire(path, { timeout: 0, shared: true }); return g; })();');
  } catch {
    t.skip(`this Node (${process.version}) lacks \`await using\`; the test above calls Symbol.asyncDispose directly`);
    return;
  }
  const g = await fn(acquire, path);
  assert.equal(await g.holds(), false);
  assert.deepEqual(await holders(path), []);
});

test('a lease keeps a semaphore slot renewed', async (t) => {
  const path = join(scratch(t), 'lease.lock');
  const l = await lease(path, { ...fast, slots: 2, staleAfter: 0.6 });
  assert.equal(l.slot, 0);
  await sleep(1500); // 2.5 lifetimes: without renewals it would be broken
  assert.equal(l.lost, null);
  assert.ok(l.renewals >= 3, `renewals: ${l.renewals}`);
  const [entry] = await holders(path);
  assert.equal(entry.holder.token, l.token);
  assert.equal(entry.holder.staleAfter, 0.6);
  assert.ok(entry.renewed !== null && entry.renewed < 0.6 && !entry.stale, JSON.stringify(entry));
  await l.release();
  assert.deepEqual(await holders(path), []);
});

test('an aborted waiting reader leaves nothing of its own', { skip: NO_CLI }, async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'abort.lock');
  const writer = cli('acquire', path, '--timeout', '0', '--verification-delay', '0');
  assert.equal(writer.status, 0, writer.stderr);
  const before = tree(dir);
  const controller = new AbortController();
  const waiting = acquire(path, { ...fast, retryInterval: 0.05, shared: true, signal: controller.signal });
  await sleep(300);
  controller.abort();
  await assert.rejects(waiting, { name: 'AbortError' });
  const mine = (n) => !(n === 'abort.lock.queue/' || n === 'abort.lock.queue/served' || n.startsWith('abort.lock.queue/tickets/'));
  assert.deepEqual(tree(dir).filter(mine), before.filter(mine));
  assert.deepEqual(await holders(path), []);
  assert.equal(cli('release', path, writer.stdout).status, 0);
});

// ---------------------------------------------------------------- with the native CLI

test('readers from this package and from the CLI share, and exclude writers of either', { skip: NO_CLI }, async (t) => {
  const path = join(realpathSync(scratch(t)), 'cli.lock');
  const mine = await acquire(path, { ...fast, timeout: 0, shared: true, prefix: 'js-' });
  const listed = cli('status', path);
  assert.equal(listed.status, 0, listed.stderr);
  assert.ok(listed.stderr.includes('shared, slot 0') && listed.stderr.includes(mine.token), listed.stderr);
  assert.equal(cli('holds', path, mine.token).status, 0);
  const theirs = cli('acquire', path, '--shared', '--timeout', '0', '--verification-delay', '0');
  assert.equal(theirs.status, 0, theirs.stderr);
  assert.deepEqual((await holders(path)).map((h) => [h.slot, h.holder.token]), [[0, mine.token], [1, theirs.stdout]]);
  assert.equal(await holds(path, theirs.stdout), true);
  const writer = await cliAsync('acquire', path, '--timeout', '0.2', '--verification-delay', '0');
  assert.equal(writer.status, 1);
  assert.ok(writer.stderr.includes('2 shared holders'), writer.stderr);
  // Token-based release of the CLI's reader from here, and of ours by the CLI.
  await release(path, theirs.stdout);
  assert.equal(cli('release', path, mine.token).status, 0);
  assert.equal(await mine.holds(), false);
  await assert.rejects(mine.release(), { code: 'not-owner' });
  assert.deepEqual(await holders(path), []);
  // A CLI reader keeps a writer of this package out.
  const token = cli('acquire', path, '--shared', '--timeout', '0', '--verification-delay', '0').stdout;
  await assert.rejects(acquire(path, { ...fast, timeout: 0.2 }), (e) => e.code === 'timeout' && e.message.includes('1 shared holder)'));
  assert.equal(cli('release', path, token).status, 0);
  const w = await acquire(path, { ...fast, timeout: 0 });
  await w.release();
});

test('a semaphore shared with the CLI', { skip: NO_CLI }, async (t) => {
  const path = join(realpathSync(scratch(t)), 'cli-pool.lock');
  const first = cli('acquire', path, '--slots', '2', '--timeout', '0', '--verification-delay', '0');
  assert.equal(first.status, 0, first.stderr);
  const [token, slot] = first.stdout.split(' ');
  assert.equal(slot, '0');
  const mine = await acquire(path, { ...fast, timeout: 0, slots: 2 });
  assert.equal(mine.slot, 1);
  assert.equal(cli('acquire', path, '--slots', '2', '--timeout', '0', '--verification-delay', '0').status, 1);
  await assert.rejects(acquire(path, { ...fast, timeout: 0, slots: 2 }), { code: 'timeout' });
  assert.equal(cli('release', path, token).status, 0);
  const second = await acquire(path, { ...fast, timeout: 0, slots: 2 });
  assert.equal(second.slot, 0);
  const listed = cli('status', path).stderr;
  assert.ok(listed.includes(`slot 0) is held by ${second.token}`) && listed.includes(`slot 1) is held by ${mine.token}`), listed);
  await second.release();
  await mine.release();
  assert.deepEqual(await holders(path), []);
});
