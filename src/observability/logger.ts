/**
 * JSON logs through pino. Secrets never reach a log line: known secret-bearing fields are
 * redacted wherever they appear, and code that handles credentials passes them around in
 * objects that are never logged whole.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config.ts';

/** Field paths redacted in every log line. */
export const REDACTED_PATHS: readonly string[] = [
  'password',
  'token',
  'key',
  'credentials',
  '*.password',
  '*.token',
  '*.key',
  '*.credentials',
  '*.*.password',
  '*.*.token',
  'headers.authorization',
  'headers["x-consul-token"]',
  '*.headers["x-consul-token"]',
  '*.headers.authorization',
];

/** Creates the process logger; `destination` is for tests. */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { app: 'kube-registrar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...REDACTED_PATHS], censor: '[REDACTED]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
