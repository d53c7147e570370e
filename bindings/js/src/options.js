// Argument checks: every bad type or unrepresentable value is a TypeError or
// RangeError with a one-line message, thrown before anything reaches wasm.
// What the component judges (a lifetime out of its range, a prefix's
// characters, a delay over an hour) it reports as `invalid-options`, and so
// does a semaphore's number of slots out of 1..1024 (checked here).
import { resolve, dirname, basename } from 'node:path';
import { realpathSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UuidlockError } from './errors.js';

const U64_MAX = (1n << 64n) - 1n;

/** The most slots a semaphore may have, as the component allows. */
export const MAX_SLOTS = 1024;

/** The acquire options, in seconds, named as the CLI's flags in camelCase. */
const ACQUIRE_KEYS = ['timeout', 'staleAfter', 'verificationDelay', 'retryInterval', 'prefix', 'queue', 'maxClockSkew', 'shared', 'slots', 'signal'];

function describe(value) {
  if (value === null) return 'null';
  if (typeof value === 'string') return `a string (${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)})`;
  if (typeof value === 'bigint') return `a bigint (${value}n)`;
  if (typeof value === 'number') return `the number ${value}`;
  return `${typeof value === 'object' ? 'an object' : `a ${typeof value}`}`;
}

function closest(word, candidates) {
  const distance = (a, b) => {
    const row = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0];
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const keep = row[j];
        row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
        prev = keep;
      }
    }
    return row[b.length];
  };
  let best;
  for (const c of candidates) {
    const d = distance(word, c);
    if (d <= 3 && (!best || d < best.d)) best = { c, d };
  }
  return best?.c;
}

/** Seconds to nanoseconds as a u64; `undefined` for `null`/`undefined`. */
function seconds(name, value, { forever = false } = {}) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number') throw new TypeError(`uuidlock: ${name} must be a number of seconds, not ${describe(value)}`);
  if (Number.isNaN(value)) throw new RangeError(`uuidlock: ${name} must be a number of seconds, not NaN`);
  if (value < 0) throw new RangeError(`uuidlock: ${name} must not be negative (${value} s)`);
  if (value === Infinity) {
    if (forever) return undefined;
    throw new RangeError(`uuidlock: ${name} must be finite`);
  }
  const scaled = Math.round(value * 1e9);
  if (scaled >= 2 ** 64) {
    // A timeout longer than 584 years waits forever, as the CLI takes any length.
    if (forever) return undefined;
    throw new RangeError(`uuidlock: ${name} is too large (${value} s; at most ${Number(U64_MAX) / 1e9} s can be expressed)`);
  }
  return BigInt(scaled);
}

/** The WIT `mode` of `shared` and `slots`: `{ tag: 'exclusive' }`,
 * `{ tag: 'shared' }` or `{ tag: 'slots', val: N }`. Throws TypeError
 * (a wrong type, or both given), RangeError (not a whole number), or
 * UuidlockError 'invalid-options' (slots out of 1..MAX_SLOTS). */
function checkMode(shared, slots) {
  if (shared === undefined || shared === null) shared = false;
  if (typeof shared !== 'boolean') throw new TypeError(`uuidlock: shared must be a boolean, not ${describe(shared)}`);
  if (slots === undefined || slots === null) return { tag: shared ? 'shared' : 'exclusive' };
  if (typeof slots !== 'number') {
    throw new TypeError(`uuidlock: slots must be a number (how many may hold the lock at once), not ${describe(slots)}`);
  }
  if (shared) {
    throw new TypeError(
      `uuidlock: the options shared and slots cannot be combined: give { shared: true } for a reader, or { slots: ${slots} } for one of ${slots} holders of a semaphore`,
    );
  }
  if (!Number.isInteger(slots)) throw new RangeError(`uuidlock: slots must be a whole number, not ${describe(slots)}`);
  if (slots < 1 || slots > MAX_SLOTS) {
    throw new UuidlockError('invalid-options', `a semaphore has ${slots} slots; it must have from 1 to ${MAX_SLOTS} (options.slots)`);
  }
  return { tag: 'slots', val: slots };
}

/** The options object checked; throws TypeError/RangeError, or UuidlockError
 * 'invalid-options' for a semaphore's slots out of range. */
export function checkOptions(options, { allowed = ACQUIRE_KEYS, defaults = {} } = {}) {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`uuidlock: options must be an object, not ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      const hint = closest(key, allowed);
      throw new TypeError(`uuidlock: unknown option '${key}'${hint ? `; did you mean '${hint}'?` : `; known: ${allowed.join(', ')}`}`);
    }
  }
  const o = { ...defaults, ...options };
  const prefix = o.prefix ?? '';
  if (typeof prefix !== 'string') throw new TypeError(`uuidlock: prefix must be a string, not ${describe(prefix)}`);
  const queue = o.queue ?? true;
  if (typeof queue !== 'boolean') throw new TypeError(`uuidlock: queue must be a boolean, not ${describe(queue)}`);
  const signal = o.signal;
  if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) {
    throw new TypeError(`uuidlock: signal must be an AbortSignal, not ${describe(signal)}`);
  }
  const wit = {
    prefix,
    verificationDelayNs: seconds('verificationDelay', o.verificationDelay) ?? 100_000_000n,
    retryIntervalNs: seconds('retryInterval', o.retryInterval) ?? 100_000_000n,
    timeoutNs: seconds('timeout', o.timeout, { forever: true }),
    staleAfterNs: seconds('staleAfter', o.staleAfter),
    queue,
    maxClockSkewNs: seconds('maxClockSkew', o.maxClockSkew) ?? 0n,
    mode: checkMode(o.shared, o.slots),
  };
  return { wit, prefix, mode: wit.mode.tag, signal: signal ?? undefined, timeout: o.timeout ?? null };
}

/** The path as a string: a string or a file: URL; throws TypeError. */
export function checkPath(path) {
  if (path instanceof URL) {
    if (path.protocol !== 'file:') throw new TypeError(`uuidlock: a lock path URL must be a file: URL, not ${path.protocol}`);
    return fileURLToPath(path);
  }
  if (typeof path !== 'string') throw new TypeError(`uuidlock: the lock path must be a string or a file: URL, not ${describe(path)}`);
  return path;
}

/** Checks a token argument's type; throws TypeError. */
export function checkToken(token) {
  if (typeof token !== 'string') throw new TypeError(`uuidlock: the token must be a string, not ${describe(token)}`);
  return token;
}

/**
 * The lock file and the directory the guest is granted, as the native CLI
 * grants it: the directory resolved as the OS resolves it (links and `..`
 * included), so the lock is the very file other programs reach through the
 * same path; the last component stays as given (the guest refuses a link
 * there). Throws UuidlockError 'invalid-path' or 'io'.
 */
export function locate(given) {
  if (given === '') throw new UuidlockError('invalid-path', 'the lock path is empty; name a lock file, e.g. /tmp/job.lock', given);
  if (given.includes('\0')) {
    throw new UuidlockError('invalid-path', `${JSON.stringify(given)} contains a NUL character; lock paths cannot`, given);
  }
  const absolute = resolve(given);
  const name = basename(absolute);
  if (absolute === '/' || /(^|\/)\.\.?\/*$/.test(given) || name === '') {
    throw new UuidlockError('invalid-path', `${given} does not name a file; name a lock file, e.g. /tmp/job.lock`, given);
  }
  const parent = dirname(absolute);
  let dir;
  try {
    dir = realpathSync.native(parent);
  } catch (e) {
    if (e.code === 'ENOENT') {
      throw new UuidlockError('io', `cannot lock ${given}: the directory ${parent} does not exist; create it first`, given);
    }
    if (e.code === 'ENOTDIR') {
      throw new UuidlockError('invalid-path', `cannot lock ${given}: ${parent} is not a directory`, given);
    }
    throw new UuidlockError('io', `cannot lock ${given}: cannot resolve ${parent}: ${e.message}`, given);
  }
  try {
    if (!statSync(dir).isDirectory()) {
      throw new UuidlockError('invalid-path', `cannot lock ${given}: ${parent} is not a directory`, given);
    }
  } catch (e) {
    if (e instanceof UuidlockError) throw e;
    throw new UuidlockError('io', `cannot lock ${given}: cannot inspect ${parent}: ${e.message}`, given);
  }
  if (dir === '/') {
    throw new UuidlockError(
      'invalid-path',
      `cannot lock ${given}: its directory is /, which this package never grants to the guest; put the lock in a directory of its own`,
      given,
    );
  }
  return { file: `${dir}/${name}`, dir };
}
