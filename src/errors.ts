/** Helpers shared by everything that wraps or reports errors. */

/** The message of a caught value, to be quoted in the message of an error that wraps it. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
