#!/usr/bin/env node
// Builds gen/: the uuidlock component transpiled by jco, once for sync and
// once for async instantiation. The component comes from $UUIDLOCK_COMPONENT
// or, failing that, from `uuidlock export TMPDIR` with the `uuidlock` on PATH.
// Every failure is one line on stderr naming the fix, and exit status 1.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, renameSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const JCO_VERSION = '1.35.0';
const gen = join(root, 'gen');

function fail(line) {
  process.stderr.write(`uuidlock (npm build): ${line}\n`);
  process.exit(1);
}

const require = createRequire(join(root, 'package.json'));

/** npm itself, as the ordinary client: the one running this script if any. */
function npm(args, what) {
  const execpath = process.env.npm_execpath;
  const [cmd, argv] = execpath && /\.[cm]?js$/.test(execpath) ? [process.execPath, [execpath, ...args]] : ['npm', args];
  const run = spawnSync(cmd, argv, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.status !== 0) {
    const why = (run.stderr || run.stdout || String(run.error)).trim().split('\n').filter(Boolean).pop();
    fail(`${what} failed (${why}); run \`npm install\` in ${root} by hand`);
  }
}

/** The jco command line: the devDependency if installed, else the same
 * pinned version through `npm exec` (npm links a folder dependency without
 * installing its dependencies, devDependencies least of all). */
function jcoCommand() {
  try {
    // jco's exports map hides package.json: climb from its entry point.
    let dir = dirname(require.resolve('@bytecodealliance/jco'));
    while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    if (pkg.version !== JCO_VERSION) throw new Error(`jco ${pkg.version}`);
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.jco;
    return (args) => spawnSync(process.execPath, [join(dir, bin), ...args], { encoding: 'utf8' });
  } catch {
    const execpath = process.env.npm_execpath;
    const exec = ['exec', '--yes', `--package=@bytecodealliance/jco@${JCO_VERSION}`, '--', 'jco'];
    return (args) =>
      execpath && /\.[cm]?js$/.test(execpath)
        ? spawnSync(process.execPath, [execpath, ...exec, ...args], { cwd: root, encoding: 'utf8' })
        : spawnSync('npm', [...exec, ...args], { cwd: root, encoding: 'utf8' });
  }
}

/** The runtime dependency, installed beside the package when npm did not
 * (a folder installed as a link gets none). */
function ensureRuntimeDependencies() {
  try {
    require.resolve('@bytecodealliance/preview2-shim/instantiation');
  } catch {
    npm(['install', '--omit=dev', '--ignore-scripts', '--no-save', '--no-audit', '--no-fund'], 'installing @bytecodealliance/preview2-shim beside the package');
  }
}

/** The component's file, and how it was found (for gen/SOURCE). */
function findComponent(scratch) {
  const given = process.env.UUIDLOCK_COMPONENT;
  if (given) {
    if (!existsSync(given)) fail(`UUIDLOCK_COMPONENT=${given} does not exist; point it at uuidlock.component.wasm (\`uuidlock export DIR\` writes one)`);
    return { file: resolve(given), source: `UUIDLOCK_COMPONENT=${resolve(given)}` };
  }
  mkdirSync(scratch, { recursive: true });
  const run = spawnSync('uuidlock', ['export', scratch], { encoding: 'utf8' });
  if (run.error?.code === 'ENOENT') {
    fail('no component to build from: set UUIDLOCK_COMPONENT=/path/to/uuidlock.component.wasm, or put the `uuidlock` CLI on PATH (cargo install --path host/cli)');
  }
  if (run.error || run.status !== 0) {
    const why = (run.stderr || String(run.error || `exit ${run.status}`)).trim().split('\n')[0];
    fail(`\`uuidlock export ${scratch}\` failed (${why}); set UUIDLOCK_COMPONENT=/path/to/uuidlock.component.wasm instead`);
  }
  const file = join(scratch, 'uuidlock.component.wasm');
  if (!existsSync(file)) fail(`\`uuidlock export\` wrote no uuidlock.component.wasm into ${scratch}; upgrade the uuidlock CLI or set UUIDLOCK_COMPONENT`);
  const version = spawnSync('uuidlock', ['--version'], { encoding: 'utf8' }).stdout?.trim();
  return { file, source: `uuidlock export (${version || 'uuidlock'} on PATH)` };
}

const scratch = mkdtempSync(join(tmpdir(), 'uuidlock-js-build-'));
try {
  const { file: component, source } = findComponent(join(scratch, 'export'));
  ensureRuntimeDependencies();
  const jco = jcoCommand();
  const staging = join(scratch, 'gen');
  for (const mode of ['sync', 'async']) {
    const run = jco(['transpile', component, '-o', join(staging, mode), '--name', 'uuidlock', '--instantiation', mode, '--quiet']);
    if (run.status !== 0) {
      const why = (run.stderr || run.stdout || String(run.error)).trim().split('\n').filter(Boolean).pop();
      fail(`jco transpile (${mode}) failed on ${component}: ${why}`);
    }
  }
  // jco 1.35.0's glue calls _debugLog(...) about 270 times over, each
  // building its arguments and reading process.env.JCO_DEBUG (a lookup into
  // the C++ environment), a third of the cost of an uncontended acquire.
  // Every call site starts a statement; turn each into `false && ...`, so
  // that its arguments are never built. (Set UUIDLOCK_KEEP_JCO_DEBUG=1 to
  // keep them, e.g. to debug with JCO_DEBUG=1.)
  if (!process.env.UUIDLOCK_KEEP_JCO_DEBUG) {
    for (const mode of ['sync', 'async']) {
      const file = join(staging, mode, 'uuidlock.js');
      const js = readFileSync(file, 'utf8');
      let sites = 0;
      const stripped = js.replace(/^(\s*)_debugLog\(/gm, (_, indent) => {
        sites += 1;
        return `${indent}false && _debugLog(`;
      });
      if (sites === 0) process.stderr.write(`uuidlock (npm build): note: no _debugLog call found in jco's ${mode} output; nothing stripped\n`);
      writeFileSync(file, stripped);
    }
  }
  // The world must export the interface this package speaks.
  const dts = readFileSync(join(staging, 'sync', 'uuidlock.d.ts'), 'utf8');
  if (!dts.includes("'uuidlock:lock/lock@0.3.0'")) {
    fail(`${component} does not export uuidlock:lock/lock@0.3.0; use the component of uuidlock 0.3 (\`uuidlock export DIR\`)`);
  }
  writeFileSync(join(staging, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(join(staging, 'SOURCE'), `${source}\njco transpile --instantiation sync|async (@bytecodealliance/jco ${JCO_VERSION})\n`);
  rmSync(gen, { recursive: true, force: true });
  mkdirSync(dirname(gen), { recursive: true });
  renameSync(staging, gen);
  process.stdout.write(`uuidlock: transpiled the component from ${source} into ${gen}\n`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
