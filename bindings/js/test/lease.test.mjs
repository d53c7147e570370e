// Lifetimes, stale locks broken, leases renewed, and leases lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, unlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { acquire, lease, status, Lease, UuidlockError } from '../src/index.js';
import { scratch, cli, cliAsync, cliHold, NO_CLI, sleep } from './helpers.mjs';

test('a lock with a lifetime that is not renewed is broken by the next contender', { skip: NO_CLI }, async (t) => {
  const path = join(scratch(t), 'stale.lock');
  const g = await acquire(path, { verificationDelay: 0, timeout: 0, staleAfter: 0.5 });
  assert.equal((await status(path)).holder.staleAfter, 0.5);
  // Within the lifetime the CLI cannot take it.
  assert.equal(cli('acquire', path, '--timeout', '0').status, 1);
  // After it, the CLI breaks it (waiting at most a few lifetimes).
  const run = cli('acquire', path, '--timeout', '5', '--verification-delay', '0', '--retry-interval', '0.05');
  assert.equal(run.status, 0, run.stderr);
  const theirs = run.stdout;
  assert.equal(await g.holds(), false);
  await assert.rejects(g.refresh(), (e) => e.code === 'not-owner' && e.message.includes('broken as stale or released') && e.message.includes(theirs));
  await assert.rejects(g.release(), { code: 'not-owner' });
  assert.equal((await status(path)).holder.token, theirs, 'the late release deleted nothing');
  assert.equal(cli('release', path, theirs).status, 0);
});

test('a lease renews every third of its lifetime and keeps contenders out', { skip: NO_CLI }, async (t) => {
  const path = join(scratch(t), 'lease.lock');
  const l = await lease(path, { staleAfter: 0.6, verificationDelay: 0 });
  assert.ok(l instanceof Lease);
  assert.equal(l.lifetime, 0.6);
  assert.ok(Math.abs(l.interval - 0.2) < 1e-9);
  assert.equal(l.lost, null);
  // The CLI waits 2 s (more than three lifetimes) and never gets it.
  const run = await cliAsync('acquire', path, '--timeout', '2', '--retry-interval', '0.05');
  assert.equal(run.status, 1, `the lease kept the lock: ${run.stderr}`);
  assert.ok(run.stderr.includes(l.token), run.stderr);
  assert.ok(l.renewals >= 6, `renewals: ${l.renewals} in > 2 s at 0.2 s`);
  const s = await status(path);
  assert.ok(s.renewed !== null && s.renewed < 0.6, `renewed ${s.renewed} s ago`);
  assert.equal(l.lost, null);
  await l.release();
  assert.equal(existsSync(path), false);
  const renewals = l.renewals;
  await sleep(500);
  assert.equal(l.renewals, renewals, 'no renewal after release');
});

test('a lease whose lock is broken by hand is lost: onLost and lost report it', async (t) => {
  const path = join(realpathSync(scratch(t)), 'lost.lock');
  const l = await lease(path, { staleAfter: 0.6, verificationDelay: 0 });
  const seen = [];
  const lostAt = new Promise((resolve) => l.onLost((why) => { seen.push(why); resolve(performance.now()); }));
  const broken = performance.now();
  unlinkSync(path); // someone breaks the lock by hand
  const at = await Promise.race([lostAt, sleep(3000).then(() => null)]);
  assert.ok(at !== null, 'onLost was called');
  assert.ok(at - broken < 1000, `noticed within about a renewal interval (${Math.round(at - broken)} ms)`);
  assert.equal(seen.length, 1);
  assert.ok(l.lost instanceof UuidlockError);
  assert.equal(l.lost, seen[0]);
  assert.equal(l.lost.code, 'not-owner');
  assert.equal(l.lost.reason, 'not-owner');
  assert.ok(l.lost.message.includes(path) && l.lost.message.includes('lost'), l.lost.message);
  // A callback added after the loss is called too, once.
  const late = await new Promise((resolve) => l.onLost(resolve));
  assert.equal(late, l.lost);
  await assert.rejects(l.release(), { code: 'not-owner' });
  assert.equal(existsSync(path), false);
});

test('a lease released by its token elsewhere (the CLI) is lost', { skip: NO_CLI }, async (t) => {
  const path = join(scratch(t), 'cli-lost.lock');
  const l = await lease(path, { staleAfter: 0.9, verificationDelay: 0 });
  const lost = new Promise((resolve) => l.onLost(resolve));
  assert.equal(cli('release', path, l.token).status, 0);
  const other = cliHold(path); // and someone else takes it
  const why = await Promise.race([lost, sleep(3000).then(() => null)]);
  assert.ok(why, 'lost');
  assert.equal(why.code, 'not-owner');
  assert.equal((await status(path)).holder.token, other, 'the new holder keeps the lock');
  assert.equal(cli('release', path, other).status, 0);
});

test('a lease defaults to a 30 s lifetime', async (t) => {
  const path = join(scratch(t), 'default.lock');
  const l = await lease(path, { verificationDelay: 0, timeout: 0 });
  assert.equal(l.lifetime, 30);
  assert.equal((await status(path)).holder.staleAfter, 30);
  await l[Symbol.asyncDispose]();
  assert.equal(existsSync(path), false);
});
