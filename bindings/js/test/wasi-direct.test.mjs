// The in-thread WASI filesystem (src/wasi-direct.js) keeps the guest inside
// its preopen as preview2-shim does, and never blocks on a FIFO; and the
// package works the same over either filesystem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, realpathSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDirectWasi } from '../src/wasi-direct.js';
import { scratch, runNode, INDEX } from './helpers.mjs';

const nofollow = { symlinkFollow: false };
const follow = { symlinkFollow: true };
const readOnly = { read: true };

function setup(t) {
  const outside = realpathSync(scratch(t));
  const root = join(outside, 'granted');
  mkdirSync(root);
  writeFileSync(join(outside, 'secret'), 'outside');
  writeFileSync(join(root, 'inside'), 'inside');
  mkdirSync(join(root, 'sub'));
  symlinkSync('/etc/passwd', join(root, 'abs-link'));
  symlinkSync('../secret', join(root, 'escape-link'));
  symlinkSync('inside', join(root, 'ok-link'));
  const wasi = createDirectWasi(root, root);
  const [[preopen, guest]] = wasi.imports['wasi:filesystem/preopens'].getDirectories();
  assert.equal(guest, root);
  return { wasi, preopen, root, outside };
}

function throwsCode(fn, expected) {
  assert.throws(fn, (e) => e === expected, `expected ${expected}`);
}

function readAll(d) {
  const s = d.readViaStream(0n);
  const chunks = [];
  for (;;) {
    try {
      chunks.push(Buffer.from(s.blockingRead(4096n)));
    } catch (e) {
      assert.deepEqual(e, { tag: 'closed' });
      return Buffer.concat(chunks).toString();
    }
  }
}

test('paths stay inside the preopen: absolute, .., and links out are refused', (t) => {
  const { preopen, wasi } = setup(t);
  const open = (path, pf = follow) => preopen.openAt(pf, path, {}, readOnly);
  throwsCode(() => open('/etc/passwd'), 'not-permitted');
  throwsCode(() => open('../secret'), 'not-permitted');
  throwsCode(() => open('sub/../../secret'), 'not-permitted');
  throwsCode(() => open('abs-link'), 'not-permitted');
  throwsCode(() => open('escape-link'), 'not-permitted');
  throwsCode(() => preopen.statAt(follow, 'escape-link'), 'not-permitted');
  // Without following, a link is itself (and opening it with O_NOFOLLOW fails).
  assert.equal(preopen.statAt(nofollow, 'escape-link').type, 'symbolic-link');
  throwsCode(() => open('escape-link', nofollow), 'loop');
  // Inside: fine, links included.
  assert.equal(readAll(open('sub/../inside')), 'inside');
  assert.equal(readAll(open('ok-link')), 'inside');
  wasi.closeAll();
});

test('files: exclusive create, write, read back, link, rename, unlink, directories', (t) => {
  const { preopen, root } = setup(t);
  const d = preopen.openAt(nofollow, 'new', { create: true, exclusive: true }, { write: true });
  assert.equal(d.getType(), 'regular-file');
  d.writeViaStream(0n).blockingWriteAndFlush(new TextEncoder().encode('hello'));
  d[Symbol.dispose || Symbol.for('dispose')]();
  throwsCode(() => preopen.openAt(nofollow, 'new', { create: true, exclusive: true }, { write: true }), 'exist');
  assert.equal(readFileSync(join(root, 'new'), 'utf8'), 'hello');
  preopen.linkAt(nofollow, 'new', preopen, 'linked');
  assert.equal(preopen.statAt(nofollow, 'linked').linkCount, 2n);
  assert.deepEqual(preopen.metadataHashAt(nofollow, 'linked'), preopen.metadataHashAt(nofollow, 'new'));
  preopen.renameAt('linked', preopen, 'renamed');
  preopen.unlinkFileAt('renamed');
  throwsCode(() => preopen.statAt(nofollow, 'renamed'), 'no-entry');
  preopen.createDirectoryAt('dir');
  throwsCode(() => preopen.createDirectoryAt('dir'), 'exist');
  const names = [];
  const entries = preopen.readDirectory();
  for (let e; (e = entries.readDirectoryEntry()); ) names.push(`${e.name}:${e.type}`);
  assert.ok(names.includes('dir:directory') && names.includes('new:regular-file'), names.join());
  preopen.removeDirectoryAt('dir');
  throwsCode(() => preopen.openAt(nofollow, 'sub', {}, { write: true }), 'is-directory');
});

test('opening a FIFO never waits for its other end', (t) => {
  const { preopen, root, wasi } = setup(t);
  execFileSync('mkfifo', [join(root, 'fifo')]);
  assert.equal(preopen.statAt(nofollow, 'fifo').type, 'fifo');
  const started = performance.now();
  // No reader: a writer's open fails at once (ENXIO) instead of waiting.
  throwsCode(() => preopen.openAt(nofollow, 'fifo', {}, { write: true }), 'no-such-device');
  const d = preopen.openAt(nofollow, 'fifo', {}, readOnly); // would block without O_NONBLOCK
  assert.equal(d.getType(), 'fifo');
  assert.ok(performance.now() - started < 1000);
  wasi.closeAll();
});

test('the package works the same over preview2-shim\'s filesystem (wasi: \'shim\')', async (t) => {
  const path = join(scratch(t), 'shim.lock');
  const run = await runNode(
    `import { configure, acquire, status } from ${JSON.stringify(INDEX)};
     configure({ wasi: 'shim' });
     const g = await acquire(process.argv[1], { timeout: 0, verificationDelay: 0, staleAfter: 2 });
     const s = await status(process.argv[1]);
     let second; try { await g.release(); await g.release(); } catch (e) { second = e.code; }
     console.log(JSON.stringify({ same: s.holder.token === g.token, staleAfter: s.holder.staleAfter, second }));`,
    [path],
  );
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { same: true, staleAfter: 2, second: 'not-owner' });
});
