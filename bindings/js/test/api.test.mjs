// acquire / release / holds / status, the guard, fences, token-based calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { acquire, status, release, holds, refresh, UuidlockError, Guard } from '../src/index.js';
import { scratch, tree, cli, cliHold, NO_CLI } from './helpers.mjs';

const fast = { verificationDelay: 0, timeout: 0 };

test('acquire, holds, status and release', async (t) => {
  const dir = realpathSync(scratch(t));
  const path = join(dir, 'job.lock');
  assert.equal(await status(path), null, 'a lock never taken is free');
  const guard = await acquire(path, { ...fast, prefix: 'job-' });
  assert.ok(guard instanceof Guard);
  assert.equal(guard.path, path);
  assert.match(guard.token, /^job-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(typeof guard.fence, 'number');
  assert.ok(Number.isSafeInteger(guard.fence) && guard.fence > 0);
  assert.equal(await guard.holds(), true);
  assert.ok(readFileSync(path, 'utf8').includes(guard.token), 'the lock file names its token');

  const s = await status(path);
  assert.equal(s.holder.kind, 'uuidlock');
  assert.equal(s.holder.token, guard.token);
  assert.equal(s.holder.prefix, 'job-');
  assert.equal(s.holder.staleAfter, null);
  assert.equal(s.stale, false);
  assert.equal(s.fence, guard.fence);
  assert.ok(s.age >= 0 && s.age < 60, `age ${s.age}`);
  assert.equal(s.renewed, null);

  await guard.release();
  assert.equal(existsSync(path), false, 'release deletes the lock file');
  assert.equal(await guard.holds(), false);
  assert.equal(await status(path), null);
  assert.equal(guard.released, true);
});

test('fences rise with every acquisition', async (t) => {
  const path = join(scratch(t), 'f.lock');
  let last = 0;
  for (let i = 0; i < 5; i++) {
    const g = await acquire(path, fast);
    assert.ok(g.fence > last, `fence ${g.fence} after ${last}`);
    last = g.fence;
    await g.release();
  }
});

test('a second acquire of a lock this process holds is refused at once: already-held', async (t) => {
  const path = join(scratch(t), 'twice.lock');
  const g = await acquire(path, fast);
  const started = performance.now();
  await assert.rejects(acquire(path, { timeout: 30 }), (e) => {
    assert.ok(e instanceof UuidlockError);
    assert.equal(e.code, 'already-held');
    assert.ok(e.message.includes(path) && e.message.includes(g.token) && e.message.includes('release it first'), e.message);
    return true;
  });
  assert.ok(performance.now() - started < 5000, 'refused without waiting for the timeout');
  await g.release();
  const again = await acquire(path, fast);
  await again.release();
});

test('releasing twice is not-owner and deletes nothing, even the next holder\'s lock', async (t) => {
  const path = join(scratch(t), 'rel.lock');
  const first = await acquire(path, fast);
  await first.release();
  const second = await acquire(path, fast);
  await assert.rejects(first.release(), (e) => {
    assert.equal(e.code, 'not-owner');
    assert.ok(e.message.includes(first.token) && e.message.includes(`held by ${second.token}`), e.message);
    assert.ok(e.message.includes('nothing was deleted'), e.message);
    return true;
  });
  assert.equal(await second.holds(), true, 'the other holder keeps its lock');
  assert.ok(readFileSync(path, 'utf8').includes(second.token));
  await assert.rejects(first.refresh(), { code: 'not-owner' });
  await second.release();
  await assert.rejects(second.release(), { code: 'not-owner' });
  assert.deepEqual(tree(join(path, '..')).filter((n) => n.startsWith('rel.lock') && n !== 'rel.lock.fence/' && !n.startsWith('rel.lock.fence/')), []);
});

test('Symbol.asyncDispose releases the lock (what `await using` calls)', async (t) => {
  assert.equal(typeof Symbol.asyncDispose, 'symbol');
  const path = join(scratch(t), 'dispose.lock');
  const g = await acquire(path, fast);
  assert.equal(typeof g[Symbol.asyncDispose], 'function');
  await g[Symbol.asyncDispose]();
  assert.equal(existsSync(path), false);
  assert.equal(await g.holds(), false);
  // Twice, or after release: nothing happens, no error.
  await g[Symbol.asyncDispose]();
  const h = await acquire(path, fast);
  await h.release();
  await h[Symbol.asyncDispose]();
  assert.equal(existsSync(path), false);
});

test('`await using` where the runtime has the syntax', async (t) => {
  let fn;
  try {
    fn = new Function('acquire', 'path', 'return (async () => { await using g = await acquire(path, { timeout: 0 }); return g; })();');
  } catch {
    t.skip(`this Node (${process.version}) lacks \`await using\`; the test above calls Symbol.asyncDispose directly`);
    return;
  }
  const path = join(scratch(t), 'using.lock');
  const g = await fn(acquire, path);
  assert.equal(await g.holds(), false);
  assert.equal(existsSync(path), false);
});

test('token-based release, holds and refresh, for a lock taken by the CLI', { skip: NO_CLI }, async (t) => {
  const path = join(scratch(t), 'cli.lock');
  const token = cliHold(path);
  assert.equal(await holds(path, token), true);
  await refresh(path, token);
  const s = await status(path);
  assert.equal(s.holder.token, token);
  await assert.rejects(acquire(path, { ...fast, retryInterval: 0.01 }), { code: 'timeout' });
  await release(path, token);
  assert.equal(await holds(path, token), false);
  assert.equal(cli('status', path).status, 1, 'the CLI sees the lock free');
  // And the other way round: the CLI releases what this package took.
  const g = await acquire(path, fast);
  assert.equal(cli('holds', path, g.token).status, 0);
  assert.equal(cli('release', path, g.token).status, 0);
  assert.equal(await g.holds(), false);
});

test('status reports another program\'s marker as foreign and never deletes it', async (t) => {
  const path = join(scratch(t), 'foreign.lock');
  writeFileSync(path, 'pid 1234 on some-host\n');
  const s = await status(path);
  assert.equal(s.holder.kind, 'foreign');
  assert.ok(s.holder.marker.includes('pid 1234'), s.holder.marker);
  await assert.rejects(acquire(path, { ...fast, staleAfter: 1 }), { code: 'timeout' });
  assert.equal(readFileSync(path, 'utf8'), 'pid 1234 on some-host\n');
});

test('relative paths and file: URLs name the same lock', async (t) => {
  const dir = realpathSync(scratch(t));
  const cwd = process.cwd();
  process.chdir(dir);
  t.after(() => process.chdir(cwd));
  const g = await acquire('rel.lock', fast);
  assert.equal(g.path, join(dir, 'rel.lock'));
  assert.equal(await holds(new URL(`file://${dir}/rel.lock`), g.token), true);
  await g.release();
});

test('async instantiation works the same (configure before the first call)', async (t) => {
  const { runNode, INDEX } = await import('./helpers.mjs');
  const path = join(scratch(t), 'async.lock');
  const run = await runNode(
    `import { configure, acquire, status } from ${JSON.stringify(INDEX)};
     configure({ instantiation: 'async' });
     const g = await acquire(process.argv[1], { timeout: 0, verificationDelay: 0 });
     const s = await status(process.argv[1]);
     await g.release();
     let late; try { configure({ instantiation: 'sync' }); } catch (e) { late = e.message; }
     console.log(JSON.stringify({ same: s.holder.token === g.token, fence: g.fence, after: await status(process.argv[1]), late }));`,
    [path],
  );
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout);
  assert.equal(out.same, true);
  assert.ok(out.fence > 0);
  assert.equal(out.after, null);
  assert.match(out.late, /before the first/);
});
