// uuidlock for Node: the public API. The protocol runs in the uuidlock
// component (uuidlock:lock/lock@0.3.0), transpiled by jco and run in worker
// threads (./pool.js, ./worker.js), each granted only the lock's directory.
import { randomUUID } from 'node:crypto';
import { checkOptions, checkPath, checkToken, locate, MAX_SLOTS } from './options.js';
import { UuidlockError, CODES } from './errors.js';
import { take, give, discard, workersOf, workerFailure, configure, shutdown as stopWorkers } from './pool.js';

export { UuidlockError, CODES, MAX_SLOTS, configure };

// `await using` needs Symbol.asyncDispose; Node 20 defines it, older
// runtimes may not.
if (typeof Symbol.asyncDispose !== 'symbol') {
  Object.defineProperty(Symbol, 'asyncDispose', { value: Symbol.for('nodejs.asyncDispose') });
}
const asyncDispose = Symbol.asyncDispose;

/** How long an aborted acquire may take to stop at its next sleep before its
 * worker is terminated and the acquire undone from a fresh one. */
const ABORT_GRACE_MS = 2000;
/** The shortest retry interval at which the guest's waiters pause in sleeps a
 * host may end early (the guest's wake::FROM_INTERVAL). */
const WAKES_FROM_NS = 50_000_000n;
/** How long the 'exit' handler waits for each worker. */
const EXIT_WAIT_MS = 2000;

/** The locks this process holds and has not released: token -> { file, dir,
 * mode }. A file may be held under several tokens: readers, a semaphore's
 * slots. */
const held = new Map();
/** Acquires in flight: { ch, id, file, dir, token }. */
const inFlight = new Set();

// ---------------------------------------------------------------- calls

function trapError(path, trap) {
  const line = String(trap).split('\n')[0];
  return new UuidlockError('io', `the uuidlock guest failed on ${path}: ${line}`, path);
}

/** One call on a pooled worker of `dir`: the reply message. */
async function rawCall(dir, op, args) {
  let ch;
  try {
    ch = await take(dir);
  } catch (e) {
    throw new UuidlockError('io', workerFailure(dir, e).message, args.path, e);
  }
  try {
    return await ch.call(op, args).reply;
  } catch (e) {
    throw new UuidlockError('io', workerFailure(dir, e).message, args.path, e);
  } finally {
    give(ch);
  }
}

/** A call whose component error becomes a UuidlockError; `notOwner` words
 * the 'not-owner' case, which carries no message. */
async function call(dir, op, args, notOwner) {
  const reply = await rawCall(dir, op, args);
  if ('ok' in reply) return reply.ok;
  if (reply.error) throw await componentError(dir, args.path, reply.error, notOwner);
  throw trapError(args.path, reply.trap ?? 'interrupted');
}

/** " (held by TOKEN)" and the like, for messages; never throws. */
async function heldBy(dir, file) {
  try {
    const s = await call(dir, 'status', { path: file });
    if (s === null) {
      // Readers (or a semaphore's holders) hold it without the lock file.
      const n = (await call(dir, 'holders', { path: file })).length;
      return n === 0 ? ' (it is free)' : ` (held by ${n} shared holder${n === 1 ? '' : 's'})`;
    }
    return s.holder.kind === 'uuidlock' ? ` (held by ${s.holder.token})` : ` (held by another program: ${s.holder.marker})`;
  } catch {
    return '';
  }
}

async function componentError(dir, file, payload, notOwner) {
  switch (payload.tag) {
    case 'timeout':
      return new UuidlockError('timeout', `timed out waiting for ${file}${await heldBy(dir, file)}`, file);
    case 'not-owner':
      return new UuidlockError('not-owner', notOwner ? await notOwner() : `${file} is not held by this token; nothing was changed`, file);
    default:
      return new UuidlockError(CODES.includes(payload.tag) ? payload.tag : 'io', payload.val ?? payload.tag, file);
  }
}

// ---------------------------------------------------------------- process exit

let armed = false;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function onSignal(signal) {
  // Another listener decides what the signal does; 'exit' still cleans up.
  if (process.listenerCount(signal) > 1) return;
  cleanUpSync();
  disarm();
  process.kill(process.pid, signal);
}

/** Installed at the first acquire; they stay (adding and removing four
 * listeners per call costs more than a tenth of an uncontended acquire).
 * With nothing to clean up they do nothing, and a signal no one else
 * handles is raised again. */
function arm() {
  if (armed) return;
  armed = true;
  process.on('exit', cleanUpSync);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function disarm() {
  if (!armed) return;
  armed = false;
  process.removeListener('exit', cleanUpSync);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}


/** Runs `op` on a live worker of `dir` and waits for it, blocking. */
function callSync(dir, op, args, preferred) {
  const ch = preferred && !preferred.dead ? preferred : workersOf(dir)[0];
  if (!ch) return false;
  const { id, reply } = ch.call(op, args);
  reply.catch(() => {});
  return ch.waitDoneSync(id, EXIT_WAIT_MS);
}

/**
 * The process is exiting (or dying of a signal no one else handles): undo
 * every acquire in flight (interrupted at its next sleep, then abandoned by
 * its worker) and release every lock still held, synchronously, through the
 * workers, which outlive the main thread's 'exit' handlers.
 */
function cleanUpSync() {
  const flights = [...inFlight];
  for (const f of flights) f.ch.interrupt(f.id);
  for (const f of flights) {
    inFlight.delete(f);
    const finished = f.ch.waitDoneSync(f.id, EXIT_WAIT_MS);
    if (finished && f.ch.lastAcquireHeld()) callSync(f.dir, 'abandon', { path: f.file, token: f.token }, f.ch);
  }
  for (const [token, { file, dir }] of held) {
    held.delete(token);
    callSync(dir, 'release', { path: file, token });
  }
}

// ---------------------------------------------------------------- acquire

/** Refuses an acquire that would wait for this process itself: any acquire
 * of a lock it holds exclusively, and an exclusive one of a lock it holds in
 * any mode. Readers beside its readers, and more of a semaphore's slots, are
 * taken (they wait only for others). */
async function refuseRetake(file, dir, mode) {
  for (const [token, mine] of [...held]) {
    if (mine.file !== file || (mode !== 'exclusive' && mine.mode !== 'exclusive')) continue;
    if (await call(dir, 'holds', { path: file, token })) {
      const how = mine.mode === 'exclusive' ? '' : ` (${mine.mode})`;
      throw new UuidlockError(
        'already-held',
        `${file} is already held by this process${how}, with token ${token}; release it first`,
        file,
      );
    }
    held.delete(token);
  }
}

/** Whether `channel`'s instance took `file` with a token this process still
 * holds: it would refuse to take `file` again (`already-held`). */
function remembers(channel, file) {
  const token = channel.took.get(file);
  return token !== undefined && held.get(token)?.file === file;
}

/** Undoes an acquire-as with `token` from a fresh worker's instance. */
async function undo(dir, file, token) {
  try {
    await call(dir, 'abandon', { path: file, token });
  } catch {
    // Best effort: the lock (if taken) is left to its lifetime, or to `uuidlock release`.
  }
}

async function take_(file, dir, opts) {
  const { signal } = opts;
  signal?.throwIfAborted();
  await refuseRetake(file, dir, opts.mode);
  signal?.throwIfAborted();
  // Always acquire-as, with a token made here: whatever cuts the call short
  // (an abort, the process exiting), `abandon(path, token)` undoes it.
  const token = opts.prefix + randomUUID();
  let ch;
  try {
    ch = await take(dir, (channel) => remembers(channel, file));
  } catch (e) {
    throw new UuidlockError('io', workerFailure(dir, e).message, file, e);
  }
  // Watched before the call starts, so that no release in between is missed;
  // only where the guest's pauses may end early (a retry interval of 50 ms or
  // more: the guest's src/wake.rs) and the call may wait at all.
  const wakes = opts.wit.retryIntervalNs >= WAKES_FROM_NS && opts.wit.timeoutNs !== 0n;
  const unwatch = wakes ? ch.watch(file) : () => {};
  const { id, reply } = ch.call('acquire', { path: file, token, options: opts.wit });
  const flight = { ch, id, file, dir, token };
  inFlight.add(flight);
  arm();
  let aborted = false;
  let grace;
  const onAbort = () => {
    aborted = true;
    ch.interrupt(id);
    grace = setTimeout(() => discard(ch), ABORT_GRACE_MS);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  // Aborted while a worker was being started: no event will come.
  if (signal?.aborted && !aborted) onAbort();
  let message;
  try {
    message = await reply;
  } catch (e) {
    // The worker died (or was terminated as stuck after an abort).
    inFlight.delete(flight);
    await undo(dir, file, token);
    if (aborted) throw signal.reason;
    throw new UuidlockError('io', workerFailure(dir, e).message, file, e);
  } finally {
    unwatch();
    signal?.removeEventListener('abort', onAbort);
    clearTimeout(grace);
    give(ch);
  }
  inFlight.delete(flight);
  if (aborted || message.interrupted) {
    // Interrupted and undone by the worker; or it took the lock before it
    // saw the abort, or its undo failed: undo here.
    if (!message.undone) await undo(dir, file, token);
    throw aborted ? signal.reason : new UuidlockError('io', `the acquire of ${file} was interrupted`, file);
  }
  if (message.error) {
    if (message.error.tag === 'timeout') {
      const waited = opts.timeout === null ? 'forever' : `${opts.timeout} s`;
      throw new UuidlockError(
        'timeout',
        `timed out after ${waited} waiting for ${file}${await heldBy(dir, file)}; try again later or with a longer timeout`,
        file,
      );
    }
    throw await componentError(dir, file, message.error);
  }
  if (!('ok' in message)) {
    throw trapError(file, message.trap);
  }
  held.set(message.ok.token, { file, dir, mode: opts.mode });
  ch.took.set(file, message.ok.token);
  return { file, dir, token: message.ok.token, fence: message.ok.fence, slot: message.ok.slot };
}

/** A held lock; see index.d.ts. */
export class Guard {
  #file;
  #dir;
  #token;
  #fence;
  #slot;
  #released = false;

  /** @internal */
  constructor(taken) {
    this.#file = taken.file;
    this.#dir = taken.dir;
    this.#token = taken.token;
    this.#fence = taken.fence;
    this.#slot = taken.slot ?? null;
  }

  get path() {
    return this.#file;
  }

  get token() {
    return this.#token;
  }

  get fence() {
    return this.#fence;
  }

  /** A semaphore holder's slot (`{ slots: N }`), 0 to N - 1; null otherwise. */
  get slot() {
    return this.#slot;
  }

  get released() {
    return this.#released;
  }

  async refresh() {
    return refreshBy(this.#file, this.#dir, this.#token);
  }

  async holds() {
    return call(this.#dir, 'holds', { path: this.#file, token: this.#token });
  }

  async release() {
    this.#released = true;
    return releaseBy(this.#file, this.#dir, this.#token);
  }

  /** Releases the lock unless released already, ignoring errors (call
   * `release()` to see them), as dropping the WIT guard does. */
  async [asyncDispose]() {
    if (this.#released) return;
    try {
      await this.release();
    } catch {
      // ignored, as documented
    }
  }
}

async function releaseBy(file, dir, token) {
  const forget = () => {
    if (held.get(token)?.file === file) held.delete(token);
  };
  try {
    await call(dir, 'release', { path: file, token }, async () => {
      let stillOurs = false;
      try {
        stillOurs = await call(dir, 'holds', { path: file, token });
      } catch {
        // worded as not held
      }
      if (stillOurs) {
        return `${file} is held by ${token}, but its claim is taken (by another release of this token, a breaker, or a release killed midway); nothing was deleted; release again once that finishes`;
      }
      return `${file} is not held by ${token}${await heldBy(dir, file)}; nothing was deleted`;
    });
  } finally {
    forget();
  }
}

async function refreshBy(file, dir, token) {
  await call(dir, 'refresh', { path: file, token }, async () => {
    return `${file} is not held by ${token}${await heldBy(dir, file)}; it was broken as stale or released`;
  });
}

/** Takes the lock at `path`; see index.d.ts. */
export async function acquire(path, options) {
  const given = checkPath(path);
  const opts = checkOptions(options);
  const { file, dir } = locate(given);
  return new Guard(await take_(file, dir, opts));
}

/** Who holds the lock at `path`; null when free. */
export async function status(path) {
  const given = checkPath(path);
  const { file, dir } = locate(given);
  return call(dir, 'status', { path: file });
}

/** The shared holders of the lock at `path` (readers, a semaphore's
 * holders), by slot; empty when there are none. */
export async function holders(path) {
  const given = checkPath(path);
  const { file, dir } = locate(given);
  return call(dir, 'holders', { path: file });
}

/** Token-based calls, for a lock taken elsewhere (another process, the CLI). */
export async function release(path, token) {
  const given = checkPath(path);
  checkToken(token);
  const { file, dir } = locate(given);
  return releaseBy(file, dir, token);
}

export async function refresh(path, token) {
  const given = checkPath(path);
  checkToken(token);
  const { file, dir } = locate(given);
  return refreshBy(file, dir, token);
}

export async function holds(path, token) {
  const given = checkPath(path);
  checkToken(token);
  const { file, dir } = locate(given);
  return call(dir, 'holds', { path: file, token });
}

// ---------------------------------------------------------------- leases

/** Renewals per lifetime: a third of it between renewals leaves two more
 * chances before contenders may break the lock. */
export const RENEWALS_PER_LIFETIME = 3;
/** The lifetime a lease declares when the options give none, in seconds. */
export const DEFAULT_LIFETIME = 30;

export class Lease extends Guard {
  #lifetime;
  #timer = null;
  #stopped = false;
  #lost = null;
  #callbacks = [];
  #renewals = 0;
  #lastRenewed;

  /** @internal */
  constructor(taken, lifetime) {
    super(taken);
    this.#lifetime = lifetime;
    this.#lastRenewed = performance.now();
    this.#schedule(this.interval * 1000);
  }

  /** Seconds between renewals: a third of the lifetime. */
  get interval() {
    return this.#lifetime / RENEWALS_PER_LIFETIME;
  }

  get lifetime() {
    return this.#lifetime;
  }

  get renewals() {
    return this.#renewals;
  }

  /** null while the lease holds; then why it was lost. */
  get lost() {
    return this.#lost;
  }

  onLost(callback) {
    if (typeof callback !== 'function') throw new TypeError('uuidlock: onLost takes a function');
    if (this.#lost) queueMicrotask(() => callback(this.#lost));
    else this.#callbacks.push(callback);
  }

  #schedule(ms) {
    if (this.#stopped) return;
    // Unreferenced: a forgotten lease does not keep the process alive; the
    // process's exit releases it.
    this.#timer = setTimeout(() => this.#renew(), ms);
    this.#timer.unref();
  }

  async #renew() {
    if (this.#stopped) return;
    try {
      await this.refresh();
      if (this.#stopped) return;
      this.#lastRenewed = performance.now();
      this.#renewals += 1;
      this.#schedule(this.interval * 1000);
    } catch (e) {
      if (this.#stopped) return;
      if (e.code === 'not-owner') {
        return this.#lose(
          Object.assign(
            new UuidlockError('not-owner', `${this.path}: the lease was lost: the lock is no longer held by it (broken as stale, or released); stop working under it`, this.path, e),
            { reason: 'not-owner' },
          ),
        );
      }
      if (performance.now() - this.#lastRenewed >= this.#lifetime * 1000) {
        return this.#lose(
          Object.assign(
            new UuidlockError(e.code ?? 'io', `${this.path}: the lease was lost: no renewal succeeded for a whole lifetime (${this.#lifetime} s): ${e.message}`, this.path, e),
            { reason: 'unreachable' },
          ),
        );
      }
      // Try again soon: contenders may break the lock a lifetime after the
      // last renewal that succeeded.
      this.#schedule((this.interval * 1000) / 4);
    }
  }

  #lose(why) {
    if (this.#lost) return;
    this.#lost = why;
    this.#stop();
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    for (const cb of callbacks) {
      try {
        cb(why);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  #stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** Stops renewing and releases the lock; 'not-owner' if it was lost. */
  async release() {
    this.#stop();
    return super.release();
  }
}

/** Takes the lock with a lifetime and keeps it renewed; see index.d.ts. */
export async function lease(path, options) {
  const given = checkPath(path);
  const opts = checkOptions(options);
  if (opts.wit.staleAfterNs === undefined) opts.wit.staleAfterNs = BigInt(DEFAULT_LIFETIME * 1e9);
  const lifetime = Number(opts.wit.staleAfterNs) / 1e9;
  const { file, dir } = locate(given);
  return new Lease(await take_(file, dir, opts), lifetime);
}

/** Stops every worker thread; locks still held stay held (and are released
 * by the process's exit). Mostly for tests and benchmarks. */
export async function shutdown() {
  await stopWorkers();
}
