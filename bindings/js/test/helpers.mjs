// Shared by the tests: scratch directories, the native CLI, directory trees.
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, lstatSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';

/** tmpfs when there is one (fast, and what the benchmark uses), else the OS temp dir. */
export const SCRATCH_ROOT = existsSync('/dev/shm') ? '/dev/shm' : (await import('node:os')).tmpdir();

export function scratch(t, name = 'uuidlock-js-test-') {
  const dir = mkdtempSync(join(SCRATCH_ROOT, name));
  t?.after?.(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The native `uuidlock` CLI: $UUIDLOCK_CLI, or the one on PATH; null if none. */
export const CLI = (() => {
  const candidate = process.env.UUIDLOCK_CLI || 'uuidlock';
  const run = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
  return run.status === 0 ? candidate : null;
})();
export const NO_CLI = CLI ? false : 'the uuidlock CLI is not on PATH (set UUIDLOCK_CLI)';

/** Runs the CLI; { status, stdout, stderr }. */
export function cli(...args) {
  const run = spawnSync(CLI, args, { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout.trim(), stderr: run.stderr.trim() };
}

/** Takes `path` with the CLI (exits at once, leaving the lock held); the token. */
export function cliHold(path, ...flags) {
  const run = cli('acquire', path, '--timeout', '0', '--verification-delay', '0', ...flags);
  if (run.status !== 0) throw new Error(`uuidlock acquire failed: ${run.stderr}`);
  return run.stdout;
}

/** Every name under `dir`, recursively, with its type: what is beside the
 * lock. A name gone between the listing and its look (a waiter's staging
 * file, while it retries) is left out: it was not there. */
export function tree(dir) {
  const out = [];
  const gone = (e) => { if (e.code !== 'ENOENT') throw e; };
  const walk = (at, prefix) => {
    let names;
    // The directory asked for must be there; one below it may go.
    try { names = readdirSync(at).sort(); } catch (e) { if (at === dir) throw e; gone(e); return; }
    for (const name of names) {
      const full = join(at, name);
      let st;
      try { st = lstatSync(full); } catch (e) { gone(e); continue; }
      out.push(`${prefix}${name}${st.isDirectory() ? '/' : ''}`);
      if (st.isDirectory()) walk(full, `${prefix}${name}/`);
    }
  };
  walk(dir, '');
  return out;
}

/** Runs `node -e SCRIPT` (an ES module) with ARGS; resolves { code, signal, stdout, stderr }. */
export function runNode(script, args = [], options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...options,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, child }));
    options.onSpawn?.(child);
  });
}

export const INDEX = new URL('../src/index.js', import.meta.url).href;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check()` (or the promise it returns) is truthy, looking
 * every 10 ms; fails naming `what` after 30 s. For states a test waits
 * for, rather than guessing a delay. */
export async function until(check, what) {
  const end = performance.now() + 30_000;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`never seen in 30 s: ${what}`);
    await sleep(10);
  }
}

/** Runs the CLI without blocking this event loop (a lease keeps renewing). */
export function cliAsync(...args) {
  return new Promise((resolve) => {
    const child = spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (status) => resolve({ status, stdout: stdout.trim(), stderr: stderr.trim() }));
  });
}
