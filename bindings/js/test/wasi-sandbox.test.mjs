// Regression tests for the direct WASI filesystem's sandbox (src/wasi-direct.js),
// from a security review: descriptors are fds, not host paths (1); no
// check-then-use race leads out (2); the preopen cannot be removed (3);
// permissions are honoured (4); sizes are bounded (5); path edge cases (6);
// and the fd walk leaks no fds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { createDirectWasi } from '../src/wasi-direct.js';
import { scratch, runNode, INDEX } from './helpers.mjs';

const nofollow = { symlinkFollow: false };
const follow = { symlinkFollow: true };
const readOnly = { read: true };
const dispose = Symbol.dispose || Symbol.for('dispose');
const SECRET = 'TOP SECRET';

/** granted/ (the preopen) and outside/ (with a secret) side by side. */
function setup(t, options) {
  const top = realpathSync(scratch(t, 'uuidlock-sandbox-'));
  const root = join(top, 'granted');
  const outside = join(top, 'outside');
  mkdirSync(root);
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), SECRET);
  writeFileSync(join(outside, 'victim'), 'keep me');
  const wasi = createDirectWasi(root, root, options);
  t.after(() => wasi.closeAll());
  const [[preopen]] = wasi.imports['wasi:filesystem/preopens'].getDirectories();
  return { wasi, preopen, root, outside, top };
}

function throwsCode(fn, expected) {
  assert.throws(fn, (e) => e === expected, `expected ${expected}`);
}

/** A string error code, or 'ok'. */
function outcome(fn) {
  try {
    fn();
    return 'ok';
  } catch (e) {
    assert.equal(typeof e, 'string', `a WASI error code, not ${e?.stack ?? e}`);
    return e;
  }
}

function list(d) {
  const s = d.readDirectory();
  const names = [];
  for (let e; (e = s.readDirectoryEntry()); ) names.push(e.name);
  s[dispose]();
  return names.sort();
}

const readText = (d) => Buffer.from(d.read(100n, 0n)[0]).toString();
const fdCount = () => readdirSync('/proc/self/fd').length;

test('1: an opened directory stays that directory when the host renames it and plants a link out', (t) => {
  const { preopen, root, outside } = setup(t);
  mkdirSync(join(root, 'fence'));
  writeFileSync(join(root, 'fence', 'mine'), 'inside');
  const d = preopen.openAt(follow, 'fence', { directory: true }, { read: true, mutateDirectory: true });
  renameSync(join(root, 'fence'), join(root, 'moved'));
  symlinkSync(outside, join(root, 'fence'));

  assert.deepEqual(list(d), ['mine'], 'lists the directory it was opened on');
  throwsCode(() => d.openAt(nofollow, 'secret', {}, readOnly), 'no-entry');
  throwsCode(() => d.statAt(nofollow, 'secret'), 'no-entry');
  throwsCode(() => d.metadataHashAt(nofollow, 'secret'), 'no-entry');
  throwsCode(() => d.unlinkFileAt('victim'), 'no-entry');
  throwsCode(() => d.renameAt('secret', preopen, 'stolen'), 'no-entry');
  d.createDirectoryAt('planted');
  d.openAt(nofollow, 'new', { create: true, exclusive: true }, { write: true }).close();
  assert.equal(readText(d.openAt(nofollow, 'mine', {}, readOnly)), 'inside');
  assert.deepEqual(d.metadataHash(), preopen.metadataHashAt(nofollow, 'moved'));
  assert.equal(d.stat().type, 'directory');
  assert.deepEqual(readdirSync(outside).sort(), ['secret', 'victim']);
  assert.deepEqual(readdirSync(join(root, 'moved')).sort(), ['mine', 'new', 'planted']);
  // Through the preopen, the planted link is only a link.
  throwsCode(() => preopen.openAt(follow, 'fence/secret', {}, readOnly), 'not-permitted');
  throwsCode(() => preopen.openAt(nofollow, 'fence', { directory: true }, readOnly), 'not-directory');
});

test('1: the preopen stays its directory when the host replaces it with a link out', (t) => {
  const { preopen, root, outside, top } = setup(t);
  writeFileSync(join(root, 'mine'), 'inside');
  const before = preopen.metadataHash();
  renameSync(root, join(top, 'granted.old'));
  symlinkSync(outside, root);
  assert.deepEqual(list(preopen), ['mine']);
  assert.deepEqual(preopen.metadataHash(), before);
  throwsCode(() => preopen.statAt(nofollow, 'secret'), 'no-entry');
  throwsCode(() => preopen.unlinkFileAt('victim'), 'no-entry');
  preopen.createDirectoryAt('via-preopen');
  throwsCode(() => preopen.setTimes({ tag: 'timestamp', val: { seconds: 0n, nanoseconds: 0 } }, { tag: 'no-change' }), 'not-permitted');
  assert.deepEqual(readdirSync(outside).sort(), ['secret', 'victim']);
  assert.ok(statSync(join(top, 'granted.old', 'via-preopen')).isDirectory());
  assert.notEqual(statSync(outside).mtimeMs, 0);
});

const SWAPPER = `
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
pairs = [(sys.argv[i].encode(), sys.argv[i + 1].encode()) for i in range(2, len(sys.argv), 2)]
end = time.time() + float(sys.argv[1]); n = 0
while time.time() < end:
    for a, b in pairs:
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            sys.exit('renameat2: errno %d' % ctypes.get_errno())
        n += 1
print(n)
`;
const HAS_PYTHON = spawnSync('python3', ['-c', 'import ctypes; ctypes.CDLL(None).renameat2'], { stdio: 'ignore' }).status === 0;

test('2: racing renameat2(RENAME_EXCHANGE) of a directory and a file with links out leads nowhere outside', { skip: HAS_PYTHON ? false : 'needs python3 with renameat2', timeout: 30_000 }, async (t) => {
  const { preopen, root, outside } = setup(t);
  mkdirSync(join(root, 'd'));
  symlinkSync(outside, join(root, 'alt')); // swapped with the directory d
  writeFileSync(join(root, 'f'), 'inside');
  symlinkSync('../outside/secret', join(root, 'flink')); // swapped with the file f
  const seconds = 2;
  const swapper = spawn('python3', ['-c', SWAPPER, String(seconds + 0.5), join(root, 'd'), join(root, 'alt'), join(root, 'f'), join(root, 'flink')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let swaps = '';
  let swapErr = '';
  swapper.stdout.on('data', (b) => (swaps += b));
  swapper.stderr.on('data', (b) => (swapErr += b));
  const exited = new Promise((r) => swapper.on('exit', r));
  await new Promise((r) => setTimeout(r, 100)); // let it start swapping

  const counts = { created: 0, mkdirs: 0, reads: 0, listed: 0, secretReads: 0, secretListed: 0, refused: 0 };
  const started = Date.now();
  let i = 0;
  while (Date.now() - started < seconds * 1000) {
    i++;
    const tryIt = (fn) => {
      const r = outcome(fn);
      if (r === 'not-permitted') counts.refused++;
      return r;
    };
    if (tryIt(() => preopen.openAt(follow, `d/n${i}`, { create: true, exclusive: true }, { write: true }).close()) === 'ok') counts.created++;
    if (tryIt(() => preopen.createDirectoryAt(`d/m${i}`)) === 'ok') counts.mkdirs++;
    tryIt(() => {
      const f = preopen.openAt(nofollow, 'd/secret', {}, readOnly);
      if (readText(f) === SECRET) counts.secretReads++;
      f.close();
    });
    tryIt(() => {
      const f = preopen.openAt(follow, 'f', {}, readOnly);
      const text = readText(f);
      if (text === SECRET) counts.secretReads++;
      else if (text === 'inside') counts.reads++;
      f.close();
    });
    tryIt(() => {
      const d = preopen.openAt(follow, 'd', { directory: true }, readOnly);
      const names = list(d);
      d.close();
      if (names.includes('secret') || names.includes('victim')) counts.secretListed++;
      else counts.listed++;
    });
    tryIt(() => preopen.unlinkFileAt('d/victim'));
  }
  const code = await exited;
  assert.equal(code, 0, swapErr);
  t.diagnostic(`${i} rounds against ${swaps.trim()} swaps: ${JSON.stringify(counts)}`);
  assert.ok(Number(swaps) > 1000, 'the swapper ran');
  assert.deepEqual(readdirSync(outside).sort(), ['secret', 'victim'], 'nothing created or removed outside');
  assert.equal(counts.secretReads, 0, 'the secret was never read');
  assert.equal(counts.secretListed, 0, 'outside was never listed');
  assert.ok(counts.created > 0 && counts.reads > 0 && counts.listed > 0, 'the walk still works inside while racing');
  assert.ok(counts.refused > 0, 'the links out were met and refused');
});

test('3: the guest cannot remove, rename or unlink a descriptor\'s own directory', (t) => {
  const { preopen, root } = setup(t);
  mkdirSync(join(root, 'a'));
  mkdirSync(join(root, 'empty'));
  symlinkSync('.', join(root, 'self'));
  for (const p of ['.', '', './', 'a/..', './a/../.', 'self/.', 'self/a/..']) {
    throwsCode(() => preopen.removeDirectoryAt(p), 'not-permitted');
    throwsCode(() => preopen.unlinkFileAt(p), 'not-permitted');
    throwsCode(() => preopen.renameAt(p, preopen, 'a/moved'), 'not-permitted');
    throwsCode(() => preopen.renameAt('empty', preopen, p), 'not-permitted');
  }
  throwsCode(() => preopen.removeDirectoryAt('..'), 'not-permitted');
  throwsCode(() => preopen.removeDirectoryAt('a/../..'), 'not-permitted');
  const e = preopen.openAt(nofollow, 'empty', { directory: true }, { read: true, mutateDirectory: true });
  throwsCode(() => e.removeDirectoryAt('.'), 'not-permitted');
  throwsCode(() => e.removeDirectoryAt('..'), 'not-permitted');
  throwsCode(() => e.renameAt('.', preopen, 'x'), 'not-permitted');
  assert.ok(existsSync(root) && existsSync(join(root, 'empty')) && existsSync(join(root, 'a')));
  // What may go, goes.
  preopen.removeDirectoryAt('self/a');
  assert.ok(!existsSync(join(root, 'a')));
});

test('4: truncate needs write, the preopen\'s times are fixed, a sub-directory mutates as its parent may', (t) => {
  const { preopen, root } = setup(t);
  writeFileSync(join(root, 'f'), 'content');
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'sub', 'g'), 'g');
  throwsCode(() => preopen.openAt(nofollow, 'f', { truncate: true }, readOnly), 'not-permitted');
  assert.equal(readFileSync(join(root, 'f'), 'utf8'), 'content');
  const ro = preopen.openAt(nofollow, 'f', {}, readOnly);
  throwsCode(() => ro.setSize(0n), 'not-permitted');
  throwsCode(() => ro.setTimes({ tag: 'now' }, { tag: 'now' }), 'not-permitted');
  assert.equal(readFileSync(join(root, 'f'), 'utf8'), 'content');
  // Opened as the WASI 0.1 adapter opens every directory (read, nothing
  // else asked for), a sub-directory of a writable grant mutates, as in
  // wasmtime: the guest empties its staged directories through one.
  const sub = preopen.openAt(nofollow, 'sub', { directory: true }, readOnly);
  assert.equal(sub.getFlags().mutateDirectory, true);
  sub.unlinkFileAt('g');
  sub.createDirectoryAt('x');
  const now = { tag: 'now' };
  sub.setTimes(now, now);
  assert.deepEqual(readdirSync(join(root, 'sub')), ['x']);
  // The preopen's own times: not through setTimes, nor setTimesAt('.').
  throwsCode(() => preopen.setTimes(now, now), 'not-permitted');
  throwsCode(() => preopen.setTimesAt(nofollow, '.', now, now), 'not-permitted');
  throwsCode(() => preopen.setTimesAt(nofollow, 'sub/..', now, now), 'not-permitted');
  preopen.setTimesAt(nofollow, 'f', { tag: 'timestamp', val: { seconds: 1000n, nanoseconds: 0 } }, { tag: 'no-change' });
  assert.equal(statSync(join(root, 'f')).atimeMs, 1_000_000);
});

test('4: in a read-only grant nothing mutates, whatever a descriptor asks for', (t) => {
  const { preopen, root } = setup(t, { readOnly: true });
  writeFileSync(join(root, 'f'), 'content');
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'sub', 'g'), 'g');
  const asking = { read: true, mutateDirectory: true };
  throwsCode(() => preopen.openAt(nofollow, 'sub', { directory: true }, asking), 'not-permitted');
  const sub = preopen.openAt(nofollow, 'sub', { directory: true }, readOnly);
  assert.equal(sub.getFlags().mutateDirectory, false);
  const now = { tag: 'now' };
  for (const [at, d, file] of [['preopen', preopen, 'f'], ['sub', sub, 'g']]) {
    for (const [name, fn] of Object.entries({
      createDirectoryAt: () => d.createDirectoryAt('x'),
      unlinkFileAt: () => d.unlinkFileAt(file),
      removeDirectoryAt: () => d.removeDirectoryAt(at === 'sub' ? '../sub' : 'sub'),
      renameAt: () => d.renameAt(file, d, 'h'),
      renameInto: () => preopen.renameAt('f', d, 'h'),
      linkAt: () => d.linkAt(nofollow, file, d, 'h'),
      symlinkAt: () => d.symlinkAt(file, 'l'),
      setTimesAt: () => d.setTimesAt(nofollow, file, now, now),
      create: () => d.openAt(nofollow, 'new', { create: true }, { write: true }),
      write: () => d.openAt(nofollow, file, {}, { write: true }),
      truncate: () => d.openAt(nofollow, file, { truncate: true }, { write: true }),
      mutateChild: () => d.openAt(nofollow, '.', { directory: true }, asking),
    })) {
      assert.equal(outcome(fn), 'not-permitted', `${at}: ${name}`);
    }
  }
  throwsCode(() => sub.setTimes(now, now), 'not-permitted');
  assert.deepEqual(readdirSync(root).sort(), ['f', 'sub']);
  assert.deepEqual(readdirSync(join(root, 'sub')), ['g']);
  assert.equal(readFileSync(join(root, 'f'), 'utf8'), 'content');
  assert.equal(readText(sub.openAt(nofollow, 'g', {}, readOnly)), 'g', 'reading is fine');
});

test('5: huge write-zeroes and writes are refused, not allocated; huge offsets are errors, not traps', (t) => {
  const { preopen, root } = setup(t);
  const d = preopen.openAt(nofollow, 'f', { create: true }, { read: true, write: true });
  const s = d.writeViaStream(0n);
  const started = performance.now();
  for (const len of [2n ** 40n, 2n ** 31n, 2n ** 30n + 1n]) {
    assert.throws(
      () => s.writeZeroes(len),
      (e) => e.tag === 'last-operation-failed' && e.val.errorCode === 'insufficient-memory',
      `writeZeroes(${len})`,
    );
  }
  assert.ok(performance.now() - started < 1000, 'refused at once');
  assert.equal(statSync(join(root, 'f')).size, 0);
  s.writeZeroes(100_000n);
  s.blockingWriteZeroesAndFlush(5n);
  assert.equal(statSync(join(root, 'f')).size, 100_005);
  assert.ok(readFileSync(join(root, 'f')).every((b) => b === 0));
  // Offsets past what Node can pass: an error code.
  // (Node would silently read or write at the current position instead.)
  throwsCode(() => d.read(10n, 2n ** 63n), 'invalid');
  throwsCode(() => d.write(new Uint8Array(1), 2n ** 53n + 2n), 'invalid');
  throwsCode(() => d.writeViaStream(2n ** 60n), 'invalid');
  throwsCode(() => d.setSize(2n ** 63n), 'invalid');
  assert.equal(statSync(join(root, 'f')).size, 100_005);
});

test('6: NUL in a link target, f/.., nope/../f', (t) => {
  const { preopen, root } = setup(t);
  writeFileSync(join(root, 'f'), 'f');
  throwsCode(() => preopen.symlinkAt('a\0b', 'l'), 'invalid');
  throwsCode(() => preopen.symlinkAt('/etc/passwd', 'l'), 'not-permitted');
  throwsCode(() => preopen.openAt(follow, 'f/..', {}, readOnly), 'not-directory');
  throwsCode(() => preopen.statAt(nofollow, 'f/..'), 'not-directory');
  throwsCode(() => preopen.openAt(follow, 'nope/../f', {}, readOnly), 'no-entry');
  throwsCode(() => preopen.openAt(follow, 'f\0', {}, readOnly), 'invalid');
  assert.ok(!existsSync(join(root, 'l')));
});

test('links inside are followed by the fd walk, in intermediate and final components', (t) => {
  const { preopen, root } = setup(t);
  mkdirSync(join(root, 'a', 'b'), { recursive: true });
  writeFileSync(join(root, 'a', 'b', 'f'), 'deep');
  symlinkSync('a/b', join(root, 'ab'));
  symlinkSync('b/f', join(root, 'a', 'bf'));
  symlinkSync('../bf', join(root, 'a', 'b', 'up'));
  symlinkSync('../../../outside/secret', join(root, 'a', 'b', 'out'));
  symlinkSync('loop2', join(root, 'loop1'));
  symlinkSync('loop1', join(root, 'loop2'));
  assert.equal(readText(preopen.openAt(follow, 'ab/f', {}, readOnly)), 'deep');
  assert.equal(readText(preopen.openAt(follow, 'a/bf', {}, readOnly)), 'deep');
  assert.equal(readText(preopen.openAt(follow, 'ab/up', {}, readOnly)), 'deep');
  // `..` after a link is taken physically: the parent of the link's target.
  assert.equal(readText(preopen.openAt(nofollow, 'ab/../b/f', {}, readOnly)), 'deep');
  assert.equal(preopen.statAt(follow, 'ab').type, 'directory');
  assert.equal(preopen.statAt(nofollow, 'ab').type, 'symbolic-link');
  assert.equal(preopen.statAt(nofollow, 'ab/').type, 'directory');
  throwsCode(() => preopen.openAt(follow, 'ab/out', {}, readOnly), 'not-permitted');
  throwsCode(() => preopen.openAt(follow, 'loop1', {}, readOnly), 'loop');
  const sub = preopen.openAt(follow, 'ab', { directory: true }, readOnly);
  throwsCode(() => sub.openAt(follow, 'up', {}, readOnly), 'not-permitted'); // above sub's own directory
  assert.equal(readText(sub.openAt(follow, 'f', {}, readOnly)), 'deep');
});

test('the fd walk closes every fd it opens', (t) => {
  const baseline = fdCount();
  const { preopen, root, wasi } = setup(t);
  assert.equal(fdCount(), baseline + 1, 'the preopen holds one fd');
  mkdirSync(join(root, 'a', 'b', 'c'), { recursive: true });
  writeFileSync(join(root, 'a', 'b', 'c', 'f'), 'x');
  symlinkSync('a/b', join(root, 'ab'));
  symlinkSync('/etc', join(root, 'abs'));
  for (let i = 0; i < 300; i++) {
    preopen.statAt(follow, 'ab/c/f');
    preopen.metadataHashAt(nofollow, 'a/b/c/../c/f');
    outcome(() => preopen.statAt(follow, 'a/b/c/nope/x'));
    outcome(() => preopen.statAt(follow, 'a/b/c/f/x'));
    outcome(() => preopen.openAt(follow, 'a/b/../../..', {}, readOnly));
    outcome(() => preopen.openAt(follow, 'ab/c/abs', {}, readOnly));
    outcome(() => preopen.openAt(follow, 'abs/passwd', {}, readOnly));
    const f = preopen.openAt(follow, 'ab/c/f', {}, readOnly);
    f.close();
    preopen.openAt(nofollow, `a/b/c/n${i}`, { create: true, exclusive: true }, { write: true })[dispose]();
    preopen.renameAt(`a/b/c/n${i}`, preopen, `ab/c/m${i}`);
    preopen.linkAt(nofollow, `ab/c/m${i}`, preopen, `a/b/c/l${i}`);
    preopen.unlinkFileAt(`a/b/c/l${i}`);
    preopen.unlinkFileAt(`ab/c/m${i}`);
    preopen.createDirectoryAt(`a/b/d${i}`);
    preopen.removeDirectoryAt(`ab/d${i}`);
    const d = preopen.openAt(follow, 'ab/c', { directory: true }, readOnly);
    assert.deepEqual(list(d), ['f']);
    d.close();
  }
  assert.equal(fdCount(), baseline + 1, 'nothing leaked');
  // Left open, as a trapped guest would leave them.
  preopen.openAt(follow, 'ab/c/f', {}, readOnly);
  preopen.openAt(follow, 'ab', { directory: true }, readOnly).readDirectory().readDirectoryEntry();
  preopen[dispose](); // the guest dropping its preopen handle closes nothing
  assert.equal(preopen.statAt(nofollow, 'a').type, 'directory');
  wasi.closeAll();
  assert.equal(fdCount(), baseline, 'closeAll closes the preopen and what the guest left open');
  throwsCode(() => preopen.statAt(nofollow, 'a'), 'bad-descriptor');
});

test('a walk deeper than 256 directories is refused, and closes what it opened', (t) => {
  const { preopen, root } = setup(t);
  const deep = Array.from({ length: 300 }, () => 'd').join('/');
  mkdirSync(join(root, deep), { recursive: true });
  const baseline = fdCount();
  assert.equal(preopen.statAt(nofollow, Array(200).fill('d').join('/')).type, 'directory');
  throwsCode(() => preopen.statAt(nofollow, deep), 'name-too-long');
  assert.equal(fdCount(), baseline);
});

test('the pool\'s workers hold the preopen fd while alive and give it back on shutdown', async (t) => {
  const dir = realpathSync(scratch(t));
  const run = await runNode(
    `import { configure, acquire, shutdown } from ${JSON.stringify(INDEX)};
     import { readdirSync, readlinkSync } from 'node:fs';
     const dir = process.argv[1];
     const into = () => readdirSync('/proc/self/fd').filter((fd) => {
       try { return readlinkSync('/proc/self/fd/' + fd).startsWith(dir); } catch { return false; }
     }).length;
     configure({ wasi: 'direct' });
     for (let i = 0; i < 30; i++) {
       const g = await acquire(dir + '/x.lock', { timeout: 0, verificationDelay: 0 });
       await g.release();
     }
     const live = into();
     await shutdown();
     console.log(JSON.stringify({ live, after: into() }));`,
    [dir],
  );
  assert.equal(run.code, 0, run.stderr);
  const { live, after } = JSON.parse(run.stdout);
  assert.ok(live >= 1 && live <= 2, `one preopen fd per live worker, not ${live}`);
  assert.equal(after, 0);
});
