/**
 * The log sink of the Consul source and registrar: the subset of pino's API they use, so a pino
 * logger (or a child of one) can be passed as is, and nothing is written when none is given.
 */

/** A pino-compatible logger: structured fields first, then the message. */
export interface ConsulLogger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

const ignore = (): void => {};

/** Writes nothing: the default, so a library never prints unasked. */
export const silentLogger: ConsulLogger = { debug: ignore, info: ignore, warn: ignore, error: ignore };
