// Every error case: its code and the component's message; bad arguments
// as TypeError/RangeError before anything reaches wasm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, existsSync, lstatSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { acquire, status, release, holds, refresh, lease, UuidlockError, CODES } from '../src/index.js';
import * as pool from '../src/pool.js';
import { scratch, tree, runNode, INDEX } from './helpers.mjs';

const fast = { verificationDelay: 0, timeout: 0 };

function code(expected, ...words) {
  return (e) => {
    assert.ok(e instanceof UuidlockError, `a UuidlockError, not ${e}`);
    assert.equal(e.code, expected, e.message);
    assert.ok(!e.message.includes('\n'), 'one line');
    for (const w of words) assert.ok(e.message.includes(w), `${JSON.stringify(w)} in: ${e.message}`);
    return true;
  };
}

test('the codes are the WIT error cases', () => {
  assert.deepEqual(CODES, ['timeout', 'not-owner', 'already-held', 'invalid-path', 'invalid-options', 'invalid-token', 'outside-sandbox', 'io']);
});

test('timeout: names the path, the holder and the fix', async (t) => {
  const path = join(realpathSync(scratch(t)), 't2.lock');
  // Hold the lock from a child process so this process can wait for it.
  const { spawn } = await import('node:child_process');
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', `import { acquire } from ${JSON.stringify(INDEX)};
      const g = await acquire(process.argv[1], { timeout: 0, verificationDelay: 0 });
      console.log(g.token); process.stdin.on('data', () => {}); process.stdin.on('end', async () => { await g.release(); process.exit(0); });`, path],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const token = await new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(String(d).trim()));
    child.once('exit', (c) => reject(new Error(`the holder exited (${c})`)));
  });
  const started = performance.now();
  await assert.rejects(
    acquire(path, { timeout: 0.3, retryInterval: 0.05, verificationDelay: 0 }),
    code('timeout', 'timed out after 0.3 s', path, `held by ${token}`, 'longer timeout'),
  );
  assert.ok(performance.now() - started >= 290, 'waited the timeout');
  child.stdin.end();
  await new Promise((r) => child.on('exit', r));
  assert.equal(existsSync(path), false);
});

test('missing directory: io, naming the directory and the fix', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'no', 'such', 'x.lock');
  await assert.rejects(acquire(path, fast), code('io', path, 'does not exist', 'create it first'));
  await assert.rejects(status(path), code('io', 'does not exist'));
});

test('a path that is a directory: invalid-path, from the component', async (t) => {
  const dir = realpathSync(scratch(t));
  mkdirSync(join(dir, 'sub'));
  await assert.rejects(acquire(join(dir, 'sub'), fast), code('invalid-path', `${dir}/sub is a directory`, 'name a file inside it'));
  await assert.rejects(acquire(`${dir}/sub/..`, fast), code('invalid-path', 'does not name a file'));
  await assert.rejects(acquire('', fast), code('invalid-path', 'empty'));
  await assert.rejects(acquire('/x.lock', fast), code('invalid-path', 'never grants'));
  await assert.rejects(acquire(`${dir}/a\0b`, fast), code('invalid-path', 'NUL'));
  writeFileSync(join(dir, 'plain'), '');
  await assert.rejects(acquire(join(dir, 'plain', 'x.lock'), fast), code('invalid-path', 'is not a directory'));
});

test('a symbolic link at the lock path: invalid-path, and the link stays', async (t) => {
  const dir = realpathSync(scratch(t));
  symlinkSync('target', join(dir, 'link.lock'));
  await assert.rejects(acquire(join(dir, 'link.lock'), fast), code('invalid-path', 'link.lock'));
  assert.ok(lstatSync(join(dir, 'link.lock')).isSymbolicLink());
});

test('a FIFO at the lock path: invalid-path at once, never blocking, never deleted', async (t) => {
  const dir = realpathSync(scratch(t));
  const path = join(dir, 'fifo.lock');
  execFileSync('mkfifo', [path]);
  const started = performance.now();
  await assert.rejects(acquire(path, { ...fast, timeout: 5 }), code('invalid-path', path, 'FIFO', 'never opens or deletes it'));
  await assert.rejects(status(path), code('invalid-path', 'FIFO'));
  await assert.rejects(release(path, '11111111-1111-4111-8111-111111111111'), code('invalid-path', 'FIFO'));
  assert.ok(performance.now() - started < 4000, 'no call waited');
  assert.ok(lstatSync(path).isFIFO(), 'the FIFO is still there');
});

test('a read-only directory: io, from the component (run as an unprivileged user)', async (t) => {
  const dir = scratch(t);
  const locks = join(dir, 'ro');
  mkdirSync(locks);
  chmodSync(dir, 0o755);
  chmodSync(locks, 0o555);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) chownSync(locks, 0, 0);
  const script = `import { acquire } from ${JSON.stringify(INDEX)};
    try { await acquire(process.argv[1], { timeout: 0, verificationDelay: 0 }); console.log(JSON.stringify({ ok: true })); }
    catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`;
  // Root ignores permissions: the child runs as nobody (65534).
  const run = await runNode(script, [join(locks, 'x.lock')], asRoot ? { uid: 65534, gid: 65534 } : {});
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout.trim().split('\n').pop());
  assert.equal(out.code, 'io', out.message);
  assert.ok(out.message.includes(join(realpathSync(locks), 'x.lock')), out.message);
  assert.match(out.message, /permission|denied|access/i);
  assert.deepEqual(tree(locks), [], 'nothing written');
});

test('invalid-options: the component judges the values', async (t) => {
  const path = join(scratch(t), 'o.lock');
  await assert.rejects(acquire(path, { ...fast, staleAfter: 0.1 }), code('invalid-options', 'stale-after', '500ms'));
  await assert.rejects(acquire(path, { ...fast, staleAfter: 100000 }), code('invalid-options', 'stale-after'));
  await assert.rejects(acquire(path, { ...fast, verificationDelay: 4000 }), code('invalid-options', 'verification delay', '3600'));
  await assert.rejects(acquire(path, { ...fast, retryInterval: 4000 }), code('invalid-options', 'retry interval'));
  await assert.rejects(acquire(path, { ...fast, prefix: 'has space' }), code('invalid-options', 'prefix', "' '"));
  await assert.rejects(acquire(path, { ...fast, prefix: '-dash' }), code('invalid-options', 'prefix', "'-'"));
  await assert.rejects(acquire(path, { ...fast, prefix: 'ci&job-' }), code('invalid-options', 'prefix', "'&'"));
  await assert.rejects(acquire(path, { ...fast, prefix: 'x'.repeat(65) }), code('invalid-options', 'prefix'));
  await assert.rejects(lease(path, { ...fast, staleAfter: 0.2 }), code('invalid-options', 'stale-after'));
  assert.deepEqual(tree(join(path, '..')).filter((n) => !n.startsWith('o.lock.fence')), [], 'nothing left');
});

test('invalid-token: the component\'s message', async (t) => {
  const path = join(scratch(t), 'tok.lock');
  await assert.rejects(release(path, 'junk'), code('invalid-token', '"junk" is not a uuidlock token'));
  await assert.rejects(holds(path, 'junk'), code('invalid-token'));
  await assert.rejects(refresh(path, 'x-11111111-1111-4111-8111-11111111111A'), code('invalid-token', 'lowercase hyphenated UUID'));
  await assert.rejects(release(path, 'a b-11111111-1111-4111-8111-111111111111'), code('invalid-token', 'prefix'));
});

test('outside-sandbox: the guest sees only the lock\'s directory', async (t) => {
  // The API grants exactly the lock's directory and names the lock inside
  // it, so no call of the API can reach this case; ask the worker directly.
  const dir = realpathSync(scratch(t));
  const ch = await pool.take(dir);
  try {
    for (const path of ['/etc/passwd', `${dir}/../x.lock`, '/dev/shm/x.lock']) {
      const reply = await ch.call('status', { path }).reply;
      assert.equal(reply.error?.tag, 'outside-sandbox', JSON.stringify(reply));
      assert.ok(reply.error.val.includes('not inside any directory granted') || reply.error.val.includes('leads outside'), reply.error.val);
    }
  } finally {
    pool.give(ch);
  }
});

test('bad argument types and values: TypeError / RangeError, one line, before wasm', async (t) => {
  const path = join(scratch(t), 'args.lock');
  const cases = [
    [() => acquire(42), TypeError, 'lock path must be a string'],
    [() => acquire(undefined), TypeError, 'lock path'],
    [() => acquire(new URL('http://x/y')), TypeError, 'file: URL'],
    [() => acquire(path, 'fast'), TypeError, 'options must be an object'],
    [() => acquire(path, { timout: 1 }), TypeError, "did you mean 'timeout'"],
    [() => acquire(path, { timeout: '1' }), TypeError, 'timeout must be a number'],
    [() => acquire(path, { timeout: 1n }), TypeError, 'timeout must be a number'],
    [() => acquire(path, { timeout: -1 }), RangeError, 'must not be negative'],
    [() => acquire(path, { timeout: NaN }), RangeError, 'NaN'],
    [() => acquire(path, { staleAfter: Infinity }), RangeError, 'finite'],
    [() => acquire(path, { staleAfter: 1e11 }), RangeError, 'too large'],
    [() => acquire(path, { verificationDelay: 2 ** 64 }), RangeError, 'too large'],
    [() => acquire(path, { retryInterval: -0.5 }), RangeError, 'negative'],
    [() => acquire(path, { maxClockSkew: 'x' }), TypeError, 'maxClockSkew'],
    [() => acquire(path, { prefix: 7 }), TypeError, 'prefix must be a string'],
    [() => acquire(path, { queue: 'yes' }), TypeError, 'queue must be a boolean'],
    [() => acquire(path, { signal: {} }), TypeError, 'AbortSignal'],
    [() => release(path, 5), TypeError, 'token must be a string'],
    [() => holds(path), TypeError, 'token must be a string'],
    [() => status(null), TypeError, 'lock path'],
  ];
  for (const [fn, type, words] of cases) {
    await assert.rejects(fn(), (e) => {
      assert.ok(e instanceof type, `${fn}: ${e}`);
      assert.ok(e.message.includes(words), `${JSON.stringify(words)} in ${e.message}`);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
  }
  assert.deepEqual(tree(join(path, '..')), [], 'nothing reached the directory');
});

test('a timeout too long to express waits forever, as the CLI takes any length', async (t) => {
  const path = join(scratch(t), 'forever.lock');
  const g = await acquire(path, { timeout: 1e300, verificationDelay: 0 });
  await g.release();
  const h = await acquire(path, { timeout: Infinity, verificationDelay: 0 });
  await h.release();
});
