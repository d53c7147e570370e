// The worker thread that runs the uuidlock component for one directory.
//
// The guest is granted exactly that directory (under its own absolute host
// path, so a lock path means the same inside and out and the guest's messages
// name real paths), an empty environment and no arguments but its name.
// Calls arrive as messages and run one at a time; a call that waits for a
// lock blocks this thread, never the main one.
//
// The guest's sleeps (retry interval, verification delay, queue watch) are
// served here rather than by preview2-shim's I/O worker, with Atomics.wait on
// a shared word, so that the main thread can interrupt a waiting call even
// while its own event loop no longer runs (in a process 'exit' handler), and
// end a waiter's pause in the queue (the guest's absolute-time sleeps) when
// the lock file goes (Channel.watch in ./pool.js). An
// interrupted `acquire` traps the guest; this thread then undoes it with
// `abandon(path, token)` from a fresh instance, and says so through the
// shared words before it replies.
import { parentPort, workerData } from 'node:worker_threads';
import { hrtime } from 'node:process';
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';
import { CTL, OUTCOME_HELD, OUTCOME_NOT_HELD } from './ctl.js';
import { createDirectWasi } from './wasi-direct.js';

const { dir, mode, wasi, modules, ctl: ctlBuffer } = workerData;
const ctl = new Int32Array(ctlBuffer);
const { instantiate } = await import(new URL(`../gen/${mode}/uuidlock.js`, import.meta.url));

const symbolDispose = Symbol.dispose || Symbol.for('dispose');

/** Thrown from a sleep when the main thread interrupts the current call. */
class Interrupted extends Error {
  constructor() {
    super('uuidlock: the call was interrupted');
  }
}

let currentCall = 0;
/** The WAKE word as of the current call's start or its last early wake-up:
 * a lock file gone since then ends the next pause that may end early. */
let wakeSeen = 0;

function interrupted() {
  return currentCall !== 0 && Atomics.load(ctl, CTL.INTERRUPT) === currentCall;
}

/** Sleeps until the monotonic `deadline` (ns), or throws `Interrupted`; one
 * that is `wakeable` (a pause in the queue) also ends when the lock file went
 * since the last one did. */
function sleepUntil(deadline, wakeable) {
  for (;;) {
    // Read first: a change after it makes the wait below return at once.
    const signal = Atomics.load(ctl, CTL.SIGNAL);
    if (interrupted()) throw new Interrupted();
    if (wakeable) {
      const wake = Atomics.load(ctl, CTL.WAKE);
      if (wake !== wakeSeen) {
        wakeSeen = wake;
        return;
      }
    }
    const left = Number(deadline - hrtime.bigint()) / 1e6;
    if (left <= 0) return;
    Atomics.wait(ctl, CTL.SIGNAL, signal, left);
  }
}

/** What the current instance needs closed when it is discarded. */
let closeAll = () => {};

/** The import object for one instance: preview2-shim's, sandboxed, with the
 * clock pollables served by `sleepUntil`; in 'direct' mode (the default), the
 * filesystem and streams served in this thread (./wasi-direct.js). */
function imports() {
  const shim = new WASIShim({ sandbox: { preopens: { [dir]: dir }, env: {}, args: ['uuidlock'] } });
  const object = shim.getImportObject();
  let poll = object['wasi:io/poll'];
  if (wasi === 'direct') {
    const direct = createDirectWasi(dir, dir);
    Object.assign(object, direct.imports);
    closeAll = direct.closeAll;
    // Every pollable but a clock's (files, stdio) is always ready.
    poll = { Pollable: direct.Pollable, poll: (list) => new Uint32Array(list.map((_, i) => i)) };
  } else {
    closeAll = () => {};
  }
  const clock = object['wasi:clocks/monotonic-clock'];
  const Base = poll.Pollable;
  // The guest sleeps until an instant only for its pauses in the queue, which
  // may end early (the guest's src/wake.rs); every other sleep is relative
  // and runs its length.
  class ClockPollable extends Base {
    constructor(deadline, wakeable) {
      super();
      this.deadline = deadline;
      this.wakeable = wakeable;
    }
    ready() {
      return hrtime.bigint() >= this.deadline;
    }
    block() {
      sleepUntil(this.deadline, this.wakeable);
    }
    [symbolDispose]() {}
  }
  object['wasi:clocks/monotonic-clock'] = {
    ...clock,
    subscribeDuration: (ns) => new ClockPollable(hrtime.bigint() + BigInt(ns), false),
    subscribeInstant: (at) => new ClockPollable(BigInt(at), true),
  };
  object['wasi:io/poll'] = {
    ...poll,
    poll(list) {
      if (list.length > 0 && list.every((p) => p instanceof ClockPollable)) {
        let earliest = list[0].deadline;
        for (const p of list) if (p.deadline < earliest) earliest = p.deadline;
        const wakeable = list.every((p) => p.wakeable);
        sleepUntil(earliest, wakeable);
        const now = hrtime.bigint();
        const ready = [];
        list.forEach((p, i) => {
          if (p.deadline <= now) ready.push(i);
        });
        // Ended early: every pause is over.
        if (ready.length === 0 && wakeable) return new Uint32Array(list.map((_, i) => i));
        return new Uint32Array(ready);
      }
      // Not only clocks (the guest polls nothing else today): ready ones at once.
      if (wasi === 'direct') return new Uint32Array(list.flatMap((p, i) => (p instanceof ClockPollable && p.deadline > hrtime.bigint() ? [] : [i])));
      return poll.poll(list);
    },
  };
  return object;
}

const getCoreModule = (name) => modules[name];

async function newInstance() {
  const made = instantiate(getCoreModule, imports());
  return mode === 'async' ? await made : made;
}

let instance = await newInstance();

/** The component's `error` payload, when `e` is one (rather than a trap). */
function payloadOf(e) {
  const payload = e?.payload;
  return payload && typeof payload.tag === 'string' ? payload : undefined;
}

function convertHolder(holder) {
  return holder.tag === 'uuidlock'
    ? {
        kind: 'uuidlock',
        token: holder.val.token,
        prefix: holder.val.prefix,
        staleAfter: holder.val.staleAfterNs === undefined ? null : Number(holder.val.staleAfterNs) / 1e9,
      }
    : { kind: 'foreign', marker: holder.val };
}

function convertStatus(status) {
  if (status === undefined) return null;
  return {
    holder: convertHolder(status.holder),
    age: Number(status.ageNs) / 1e9,
    renewed: status.renewedNs === undefined ? null : Number(status.renewedNs) / 1e9,
    stale: status.stale,
    fence: status.fence === undefined ? null : Number(status.fence),
  };
}

/** `holders`' list of `shared-holder` records, by slot. */
function convertHolders(list) {
  return list.map((h) => ({
    slot: h.slot,
    holder: convertHolder(h.holder),
    age: Number(h.ageNs) / 1e9,
    renewed: h.renewedNs === undefined ? null : Number(h.renewedNs) / 1e9,
    stale: h.stale,
  }));
}

function dispatch(lock, op, a) {
  switch (op) {
    case 'acquire': {
      try {
        const got = lock.acquireAs(a.path, a.token, a.options);
        return { token: got.token, fence: Number(got.fence), slot: got.slot ?? null };
      } catch (e) {
        // Our token's UUID is a fresh v4, so a refused token is a refused
        // prefix: report it as `acquire` would, as an option.
        const p = payloadOf(e);
        if (p?.tag === 'invalid-token') {
          const why = p.val.replace(/^".*" is not a uuidlock token: /s, '');
          throw Object.assign(new Error(why), { payload: { tag: 'invalid-options', val: why } });
        }
        throw e;
      }
    }
    case 'release':
      lock.release(a.path, a.token);
      return null;
    case 'abandon':
      lock.abandon(a.path, a.token);
      return null;
    case 'refresh':
      lock.refresh(a.path, a.token);
      return null;
    case 'holds':
      return lock.holds(a.path, a.token);
    case 'status':
      return convertStatus(lock.status(a.path));
    case 'holders':
      return convertHolders(lock.holders(a.path));
    case 'ping':
      return null;
    default:
      throw new Error(`unknown call ${op}`);
  }
}

async function handle(message) {
  const { id, op, args } = message;
  currentCall = id;
  wakeSeen = Atomics.load(ctl, CTL.WAKE);
  Atomics.store(ctl, CTL.CALL, id);
  let reply;
  try {
    if (instance === null) instance = await newInstance();
    reply = { id, ok: dispatch(instance.lock, op, args) };
  } catch (e) {
    const payload = payloadOf(e);
    if (payload) reply = { id, error: payload };
    else {
      // A trap (or our interrupt): the instance is unusable from now on.
      closeAll();
      instance = null;
      reply = e instanceof Interrupted ? { id, interrupted: true } : { id, trap: String(e?.stack || e) };
    }
  }
  // An acquire interrupted at any point (in a sleep, or just as it took the
  // lock) is undone here, from a fresh instance if the old one trapped.
  if (op === 'acquire' && interrupted()) {
    currentCall = 0;
    try {
      if (instance === null) instance = await newInstance();
      instance.lock.abandon(args.path, args.token);
      reply = { id, interrupted: true, undone: true };
    } catch (e) {
      const payload = payloadOf(e);
      if (!payload) {
        closeAll();
        instance = null;
      }
      reply = { id, interrupted: true, undone: false, why: payload ? payload.val ?? payload.tag : String(e) };
    }
  }
  currentCall = 0;
  // Held, or maybe held: an undo that failed is retried by the main thread.
  if (op === 'acquire') Atomics.store(ctl, CTL.OUTCOME, reply.ok || reply.undone === false ? OUTCOME_HELD : OUTCOME_NOT_HELD);
  Atomics.store(ctl, CTL.CALL, 0);
  Atomics.store(ctl, CTL.DONE, id);
  Atomics.notify(ctl, CTL.DONE);
  parentPort.postMessage(reply);
}

// One call at a time, in arrival order.
let queue = Promise.resolve();
parentPort.on('message', (message) => {
  queue = queue.then(() => handle(message));
});
parentPort.postMessage({ ready: true });
