// Types of the `uuidlock` package (hand-written; the runtime is src/index.js).

/** The WIT `error` cases of uuidlock:lock/lock@0.3.0. */
export type ErrorCode =
  | 'timeout'
  | 'not-owner'
  | 'already-held'
  | 'invalid-path'
  | 'invalid-options'
  | 'invalid-token'
  | 'outside-sandbox'
  | 'io';

export const CODES: readonly ErrorCode[];

/** Every failure of a lock call. `message` is one line that names the path
 * and the fix (the component's own, or for 'timeout' and 'not-owner', which
 * carry none, worded as the command line words them). Bad argument types
 * and unrepresentable values are TypeError / RangeError instead, thrown
 * before anything reaches the component. */
export class UuidlockError extends Error {
  readonly name: 'UuidlockError';
  readonly code: ErrorCode;
  /** The lock path as given, when the error concerns one. */
  readonly path?: string;
}

/** Options of `acquire` and `lease`, named as the CLI's flags in camelCase.
 * Durations are in seconds. */
export interface AcquireOptions {
  /** Give up after this long (0: try exactly once). Default: wait forever
   * (also `Infinity`, `null`, or any length too long to express). */
  timeout?: number | null;
  /** The lock's lifetime: once it has gone this long without a renewal,
   * contenders may break it (0.5 to 86400, at least twice the verification
   * delay). Default: never broken (for `lease`: 30). */
  staleAfter?: number | null;
  /** Wait this long after writing, then read the token back (at most 3600).
   * 0 is safe when every peer creates exclusively (uuidlock, Python
   * filelock); 0.1 (the default) protects against uuid-filelock's
   * non-atomic create. */
  verificationDelay?: number;
  /** Sleep this long between attempts (at most 3600). Default 0.1. */
  retryInterval?: number;
  /** Put before the random UUID in the owner token (at most 64 printable
   * ASCII bytes, no spaces, not starting with '-'). Default ''. */
  prefix?: string;
  /** Wait in the queue of waiters (default true); false polls every retry
   * interval. */
  queue?: boolean;
  /** How far apart the clocks dating the share's files may be (0 to 86400). Default 0. */
  maxClockSkew?: number;
  /** Hold the lock shared (a reader): beside other shared holders, never
   * beside an exclusive holder (a writer: the default). A waiting writer
   * goes first: readers that arrive after it wait behind it. Not with
   * `slots` (a TypeError). */
  shared?: boolean;
  /** Hold the lock as one of at most this many holders at once (a
   * semaphore, 1 to 1024; every holder of the path must give the same
   * number): `guard.slot` says which. Out of range: 'invalid-options'. Not
   * with `shared`. */
  slots?: number | null;
  /** Abort a waiting acquire: it rejects with `signal.reason`, and is undone
   * (abandon) so that nothing is left beside the lock. */
  signal?: AbortSignal;
}

/** A lock path: a string (relative to the working directory, or absolute) or a file: URL. */
export type LockPath = string | URL;

/** A held lock. Release it with `release()`, or `await using`. */
export class Guard implements AsyncDisposable {
  protected constructor();
  /** The lock file's absolute path (its directory resolved as the OS resolves it). */
  readonly path: string;
  /** The owner token: the prefix and a random UUIDv4. */
  readonly token: string;
  /** The acquisition's fencing number: larger than that of every earlier
   * acquisition of the same path. Pass it with every write to the resource
   * the lock protects. At most 2^53 - 1. */
  readonly fence: number;
  /** A semaphore holder's slot (`{ slots: N }`), from 0 to N - 1: no other
   * holder has it meanwhile. null in the other modes. */
  readonly slot: number | null;
  /** Whether `release()` (or disposal) was called. */
  readonly released: boolean;
  /** Renews the lock (rewrites the heartbeat; never the lock file).
   * Rejects 'not-owner' when it was broken as stale or released. */
  refresh(): Promise<void>;
  /** Whether the lock is still held with this guard's token. */
  holds(): Promise<boolean>;
  /** Deletes the lock file if, and only if, it still holds this token.
   * Rejects 'not-owner' (nothing deleted) otherwise, e.g. a second time. */
  release(): Promise<void>;
  /** `release()` unless already released, ignoring errors. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Why a lease was lost. */
export interface LeaseLost extends UuidlockError {
  /** 'not-owner': a renewal found the lock broken or released;
   * 'unreachable': no renewal succeeded for a whole lifetime. */
  readonly reason: 'not-owner' | 'unreachable';
}

/** A held lock that renews itself every third of its lifetime. */
export class Lease extends Guard {
  /** The lifetime the lock declares, in seconds. */
  readonly lifetime: number;
  /** Seconds between renewals: lifetime / 3. */
  readonly interval: number;
  /** How many renewals have succeeded. */
  readonly renewals: number;
  /** null while the lease holds; then why it was lost. */
  readonly lost: LeaseLost | null;
  /** Calls `callback` once when the lease is lost (at once if it already is). */
  onLost(callback: (why: LeaseLost) => void): void;
  /** Stops renewing and releases; rejects 'not-owner' if the lease was lost. */
  release(): Promise<void>;
}

/** Who holds a lock. */
export type Holder =
  | { kind: 'uuidlock'; token: string; prefix: string; staleAfter: number | null }
  | { kind: 'foreign'; marker: string };

export interface LockStatus {
  holder: Holder;
  /** Seconds since the lock file was written, by the filesystem's clock. */
  age: number;
  /** Seconds since the holder last renewed; null before its first renewal
   * or for a lock without a lifetime. */
  renewed: number | null;
  /** Whether it went two lifetimes without a renewal (the next acquire breaks it). */
  stale: boolean;
  /** The latest fencing number taken for this path; null if none ever was. */
  fence: number | null;
}

/** A shared holder (a reader) or a semaphore's holder, as `holders` reports it. */
export interface SharedHolder {
  /** Its entry's index: a semaphore holder's slot. */
  slot: number;
  /** Who holds it ('foreign' for something no uuidlock holder wrote, which
   * the next exclusive acquire removes). */
  holder: Holder;
  /** Seconds since it was taken, by the filesystem's clock. */
  age: number;
  /** Seconds since its holder last renewed; null before its first renewal
   * or without a lifetime. */
  renewed: number | null;
  /** Whether it went two lifetimes without a renewal (the next exclusive
   * acquire breaks it). */
  stale: boolean;
}

/** Takes the lock at `path`, waiting as `options` say. An acquire that
 * would wait for this process itself rejects 'already-held' at once: any
 * acquire of a lock it holds exclusively, and an exclusive one of a lock it
 * holds shared or in a slot. (More readers, or more slots, of one lock in
 * one process are taken as from different processes.) */
export function acquire(path: LockPath, options?: AcquireOptions): Promise<Guard>;

/** As `acquire`, with a lifetime (`staleAfter`, default 30 s) that a
 * background timer renews every third of it. */
export function lease(path: LockPath, options?: AcquireOptions): Promise<Lease>;

/** Who holds the lock at `path`; null when it is free, and also while only
 * shared holders hold it (see `holders`). */
export function status(path: LockPath): Promise<LockStatus | null>;

/** The shared holders of the lock at `path` (readers, or a semaphore's
 * holders), by slot; empty when there are none. */
export function holders(path: LockPath): Promise<SharedHolder[]>;

/** Token-based calls, for a lock taken elsewhere (another process, the CLI). */
export function release(path: LockPath, token: string): Promise<void>;
export function refresh(path: LockPath, token: string): Promise<void>;
export function holds(path: LockPath, token: string): Promise<boolean>;

/** The most slots a semaphore may have. */
export const MAX_SLOTS: 1024;
export const RENEWALS_PER_LIFETIME: 3;
export const DEFAULT_LIFETIME: 30;

export interface ConfigureOptions {
  /** How workers instantiate the transpiled component. Default 'sync'. */
  instantiation?: 'sync' | 'async';
  /** The guest's filesystem: 'direct' (default; served synchronously in the
   * worker's own thread) or 'shim' (preview2-shim's, through its I/O worker;
   * also with UUIDLOCK_WASI=shim in the environment). */
  wasi?: 'direct' | 'shim';
  /** Idle workers kept warm per directory. Default 2. */
  idleWorkers?: number;
}

/** Tunes the runtime; only before the first lock call. */
export function configure(options: ConfigureOptions): void;

/** Stops every worker thread. Locks still held stay held (and the process's
 * exit no longer releases them). For tests and benchmarks. */
export function shutdown(): Promise<void>;
