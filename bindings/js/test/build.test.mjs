// The build (npm's `prepare`) fails with one line naming the fix when it has
// no component; the built output exports what the package speaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';

const build = new URL('../scripts/build.mjs', import.meta.url).pathname;
const gen = new URL('../gen/', import.meta.url).pathname;

function runBuild(env) {
  const run = spawnSync(process.execPath, [build], { encoding: 'utf8', env: { PATH: dirname(process.execPath), ...env } });
  return { status: run.status, stderr: run.stderr };
}

test('no component and no uuidlock on PATH: one line naming the fix, gen/ untouched', () => {
  const before = readFileSync(`${gen}SOURCE`, 'utf8');
  const run = runBuild({});
  assert.equal(run.status, 1);
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0], /UUIDLOCK_COMPONENT=.*uuidlock.*PATH/);
  assert.equal(readFileSync(`${gen}SOURCE`, 'utf8'), before, 'the previous build is kept');
});

test('UUIDLOCK_COMPONENT naming no file: one line', () => {
  const run = runBuild({ UUIDLOCK_COMPONENT: '/nonexistent/uuidlock.component.wasm' });
  assert.equal(run.status, 1);
  assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
  assert.match(run.stderr, /UUIDLOCK_COMPONENT=\/nonexistent\/uuidlock\.component\.wasm does not exist/);
});

test('the transpiled component is there for both instantiation modes', () => {
  for (const mode of ['sync', 'async']) {
    assert.ok(existsSync(`${gen}${mode}/uuidlock.js`), mode);
    assert.match(readFileSync(`${gen}${mode}/uuidlock.d.ts`, 'utf8'), /'uuidlock:lock\/lock@0\.3\.0'/);
  }
});
