// Worker threads that run the component, pooled per directory: a call takes
// an idle worker of the lock's directory (or starts one) and gives it back,
// so a waiting `acquire` never holds up a release or a lease's renewal, and
// warm workers answer the next call without a new instance.
import { Worker } from 'node:worker_threads';
import { lstatSync, readdirSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CTL, OUTCOME_HELD } from './ctl.js';

const settings = {
  instantiation: 'sync',
  // 'direct': the filesystem and streams served in the worker's own thread
  // (./wasi-direct.js; Linux only: it resolves paths through /proc/self/fd);
  // 'shim': preview2-shim's, through its I/O worker.
  wasi: process.env.UUIDLOCK_WASI === 'shim' || process.platform !== 'linux' ? 'shim' : 'direct',
  idleWorkers: 2,
};

/** Sets how workers instantiate the component and how many idle ones each
 * directory keeps; before the first call only. */
export function configure(options) {
  if (started) throw new Error('uuidlock.configure() must be called before the first lock call');
  if (options.instantiation !== undefined) {
    if (options.instantiation !== 'sync' && options.instantiation !== 'async') {
      throw new RangeError(`instantiation must be 'sync' or 'async', not ${JSON.stringify(options.instantiation)}`);
    }
    settings.instantiation = options.instantiation;
  }
  if (options.wasi !== undefined) {
    if (options.wasi !== 'direct' && options.wasi !== 'shim') {
      throw new RangeError(`wasi must be 'direct' or 'shim', not ${JSON.stringify(options.wasi)}`);
    }
    settings.wasi = options.wasi;
  }
  if (options.idleWorkers !== undefined) {
    if (!Number.isInteger(options.idleWorkers) || options.idleWorkers < 1) {
      throw new RangeError(`idleWorkers must be an integer of at least 1, not ${options.idleWorkers}`);
    }
    settings.idleWorkers = options.idleWorkers;
  }
}

let started = false;
let modules;

/** The component's core modules, compiled once per process and handed to
 * every worker (a WebAssembly.Module crosses threads without recompiling). */
function compiled() {
  started = true;
  modules ??= (async () => {
    const dir = new URL(`../gen/${settings.instantiation}/`, import.meta.url);
    let names;
    try {
      names = readdirSync(dir).filter((name) => name.endsWith('.wasm'));
    } catch {
      names = [];
    }
    if (names.length === 0) {
      throw new Error(
        `uuidlock: the component is not built (${fileURLToPath(dir)} is missing); run \`npm run build\` in ${fileURLToPath(new URL('..', import.meta.url))} with the uuidlock CLI on PATH or UUIDLOCK_COMPONENT set`,
      );
    }
    const entries = await Promise.all(
      names.map(async (name) => {
        const { readFile } = await import('node:fs/promises');
        return [name, await WebAssembly.compile(await readFile(new URL(name, dir)))];
      }),
    );
    return Object.fromEntries(entries);
  })();
  return modules;
}

let nextId = 1;

/** A worker: its thread, its shared words and its calls in flight. */
export class Channel {
  constructor(dir, mods) {
    this.dir = dir;
    this.ctl = new Int32Array(new SharedArrayBuffer(CTL.SIZE * 4));
    this.pending = new Map();
    this.dead = null;
    /** Lock file -> the token this worker's instance last acquired it with:
     * the instance refuses to take it again while that token holds it. */
    this.took = new Map();
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { dir, mode: settings.instantiation, wasi: settings.wasi, modules: mods, ctl: this.ctl.buffer },
      // The guest sees an empty environment anyway; the worker needs none.
      env: {},
      // Not the parent's --input-type, --eval and the like (a worker refuses them).
      execArgv: process.execArgv.filter((a) => !/^--(input-type|eval|print|test)/.test(a)),
      stdout: false,
      stderr: false,
    });
    this.ready = new Promise((resolve, reject) => {
      this.readyCallbacks = { resolve, reject };
    });
    this.ready.catch(() => {});
    this.worker.on('message', (message) => {
      if (message.ready) return this.readyCallbacks.resolve();
      const call = this.pending.get(message.id);
      if (call) {
        this.pending.delete(message.id);
        call.resolve(message);
      }
    });
    const die = (why) => {
      if (this.dead) return;
      this.dead = why;
      this.readyCallbacks.reject(why);
      for (const call of this.pending.values()) call.reject(why);
      this.pending.clear();
    };
    this.worker.on('error', (e) => die(e));
    this.worker.on('exit', (code) => die(new Error(`the uuidlock worker for ${dir} exited (code ${code})`)));
  }

  /** Posts a call; `id` is known at once (for `interrupt`), the reply comes later. */
  call(op, args) {
    const id = nextId++;
    const reply = new Promise((resolve, reject) => {
      if (this.dead) return reject(this.dead);
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args });
    });
    return { id, reply };
  }

  /** Asks call `id` to stop at its next sleep (an acquire is then undone). */
  interrupt(id) {
    Atomics.store(this.ctl, CTL.INTERRUPT, id);
    this.#signal();
  }

  #signal() {
    Atomics.add(this.ctl, CTL.SIGNAL, 1);
    Atomics.notify(this.ctl, CTL.SIGNAL);
  }

  /**
   * Until the returned function is called, ends the guest's pauses in the
   * queue (its absolute-time sleeps; see ./worker.js) as soon as the lock
   * file `file` goes, as this project's native host does: a release is seen
   * at once instead of at a waiter's next look. The lock's directory is
   * watched (inotify, through this thread's event loop: the worker's is
   * blocked in the guest) for events naming the lock file; one that finds
   * it gone wakes the worker. Where nothing can be watched, or the events
   * come late (a busy event loop, a network share), the guest's own looks
   * find the release, as before. Exclusion does not depend on it: only the
   * length of a waiter's pause changes (src/wake.rs in the guest).
   */
  watch(file) {
    const name = basename(file);
    let watcher;
    try {
      watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
        if (changed !== name) return;
        // A lock file appearing ends no pause (a waiter would spin while the
        // head takes the lock); one that cannot be looked at costs a look.
        let gone = true;
        try {
          gone = lstatSync(file, { throwIfNoEntry: false }) === undefined;
        } catch {
          // gone stays true
        }
        if (!gone) return;
        Atomics.add(this.ctl, CTL.WAKE, 1);
        this.#signal();
      });
    } catch {
      return () => {};
    }
    watcher.on('error', () => watcher.close());
    return () => watcher.close();
  }

  /** Waits, blocking this thread, until call `id` has finished or `ms` passed;
   * whether it finished. For the process 'exit' handler only. */
  waitDoneSync(id, ms) {
    const end = performance.now() + ms;
    for (;;) {
      const done = Atomics.load(this.ctl, CTL.DONE);
      if (done >= id) return true;
      const left = end - performance.now();
      if (left <= 0 || this.dead) return false;
      Atomics.wait(this.ctl, CTL.DONE, done, left);
    }
  }

  /** Whether the last acquire this worker finished left the lock held. */
  lastAcquireHeld() {
    return Atomics.load(this.ctl, CTL.OUTCOME) === OUTCOME_HELD;
  }

  terminate() {
    this.dead ??= new Error(`the uuidlock worker for ${this.dir} was stopped`);
    return this.worker.terminate();
  }
}

/** Per directory: idle workers, and every live one. */
const pools = new Map();

function pool(dir) {
  let p = pools.get(dir);
  if (!p) {
    p = { idle: [], all: new Set() };
    pools.set(dir, p);
  }
  return p;
}

/** A worker for `dir`, referenced (it keeps the process alive) until given
 * back: the idle one given back last, but none that `avoid(channel)` refuses. */
export async function take(dir, avoid) {
  const p = pool(dir);
  let channel;
  for (let i = p.idle.length - 1; i >= 0; i--) {
    const candidate = p.idle[i];
    if (candidate.dead) {
      p.idle.splice(i, 1);
    } else if (!avoid?.(candidate)) {
      channel = candidate;
      p.idle.splice(i, 1);
      break;
    }
  }
  if (!channel) {
    channel = new Channel(dir, await compiled());
    p.all.add(channel);
    channel.worker.on('exit', () => {
      p.all.delete(channel);
      const at = p.idle.indexOf(channel);
      if (at >= 0) p.idle.splice(at, 1);
    });
  }
  channel.worker.ref();
  await channel.ready;
  return channel;
}

/** Gives a worker back: kept warm (unreferenced) or stopped. */
export function give(channel) {
  const p = pool(channel.dir);
  if (channel.dead) return;
  if (p.idle.length < settings.idleWorkers) {
    channel.worker.unref();
    p.idle.push(channel);
  } else {
    void channel.terminate();
  }
}

/** Stops a worker that will not answer (a call stuck in a blocking system call). */
export function discard(channel) {
  pool(channel.dir).all.delete(channel);
  void channel.terminate();
}

/** Every live worker of `dir`. */
export function workersOf(dir) {
  return [...pool(dir).all].filter((c) => !c.dead);
}

export function workerFailure(dir, e) {
  const err = new Error(`uuidlock: the worker running the component for ${dir} failed: ${e?.message ?? e}`);
  err.cause = e;
  return err;
}

/** Stops every worker (tests, and a clean shutdown). */
export async function shutdown() {
  const all = [...pools.values()].flatMap((p) => [...p.all]);
  pools.clear();
  await Promise.all(all.map((c) => c.terminate()));
}
