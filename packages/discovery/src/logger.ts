/**
 * What every part of the client logs through: the subset of pino's API it uses, so a pino logger
 * (or a child of one) can be passed as it is. Silent unless one is given: a library never prints
 * unasked.
 */

/** A pino-compatible logger: structured fields first, then the message. */
export interface DiscoveryLogger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

const ignore = (): void => {};

/** Logs nothing: the default. */
export const silentLogger: DiscoveryLogger = { debug: ignore, info: ignore, warn: ignore, error: ignore };

/** The message of an error, for log fields and error texts. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
