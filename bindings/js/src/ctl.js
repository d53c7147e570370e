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
  /** Counts the times the lock file of the acquire in progress went: set by
   * the main thread, which watches it; ends the guest's pauses in the queue. */
  WAKE: 4,
  /** Bumped after every change of INTERRUPT or WAKE: what the guest's sleeps
   * wait on, so that no change is missed between a look and a wait. */
  SIGNAL: 5,
  SIZE: 6,
});

/** The acquire took the lock (and was not undone). */
export const OUTCOME_HELD = 1;
/** Anything else: failed, or interrupted and undone. */
export const OUTCOME_NOT_HELD = 2;
