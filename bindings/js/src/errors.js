// The one error class of the package: `code` is the WIT `error` case
// ('timeout', 'not-owner', 'already-held', 'invalid-path', 'invalid-options',
// 'invalid-token', 'outside-sandbox', 'io'), the message the component's (or
// for 'timeout' and 'not-owner', which carry none, the command line's).

export const CODES = Object.freeze([
  'timeout',
  'not-owner',
  'already-held',
  'invalid-path',
  'invalid-options',
  'invalid-token',
  'outside-sandbox',
  'io',
]);

export class UuidlockError extends Error {
  /**
   * @param {string} code one of CODES
   * @param {string} message one line, naming the path and the fix
   * @param {string} [path] the lock path as the caller gave it
   * @param {unknown} [cause]
   */
  constructor(code, message, path, cause) {
    super(message.replace(/\s*\n\s*/g, ' '), cause === undefined ? undefined : { cause });
    this.name = 'UuidlockError';
    this.code = code;
    if (path !== undefined) this.path = path;
  }
}
