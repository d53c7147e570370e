// The words a worker shares with the main thread (an Int32Array over a
// SharedArrayBuffer), so that the main thread can interrupt a call and wait
// for it without its event loop (in a process 'exit' handler).
export const CTL = Object.freeze({
  /** The id of the call to interrupt: set by the main thread, watched by the guest's sleeps. */
  INTERRUPT: 0,
  /** The id of the call running now, 0 when idle. */
  CALL: 1,
  /** The id of the last call finished (its reply posted or about to be). */
  DONE: 2,
  /** What the last finished acquire left: OUTCOME_* below. */
  OUTCOME: 3,
  SIZE: 4,
});

/** The acquire took the lock (and was not undone). */
export const OUTCOME_HELD = 1;
/** Anything else: failed, or interrupted and undone. */
export const OUTCOME_NOT_HELD = 2;
