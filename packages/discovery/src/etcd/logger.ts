/**
 * What the etcd source and registrar log through: the subset of pino's API they use, so a pino
 * logger (or a child of one) can be passed as it is. Silent by default.
 */

/** A pino-compatible logger: structured fields first, then the message. */
export interface EtcdLogger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Logs nothing. */
export const silentLogger: EtcdLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/** The message of an error, for log fields and error texts. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
