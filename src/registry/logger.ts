/**
 * The logging surface the registry backends use: the subset of pino's `Logger` they call, so a pino
 * logger (or a child of one) can be passed as is and tests can pass nothing.
 */

/** Structured logger, pino-compatible: a context object first, then the message. */
export interface RegistryLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Discards everything; the default when no logger is given. */
export const silentLogger: RegistryLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
