/**
 * The business check of an HTTP probe: named fields of a JSON body must hold given values.
 */

/**
 * Checks that every dotted path of `expected` (e.g. `deps.redis`) holds the expected value in the
 * JSON `body`, compared as strings (so `{"replicas": 3}` matches `"3"`).
 *
 * @returns undefined when every field matches, otherwise a message naming each failing field.
 */
export function checkBody(body: string, expected: Readonly<Record<string, string>>): string | undefined {
  let document: unknown;
  try {
    document = JSON.parse(body);
  } catch (error: unknown) {
    const reason = error instanceof Error ? error.message : String(error);
    return `body is not JSON (${reason}); expectedJSON needs a JSON answer`;
  }
  const failures = Object.entries(expected).flatMap(([path, want]) => {
    const found = readPath(document, path);
    if (found === undefined) return [`${path} is missing, want ${JSON.stringify(want)}`];
    const got = asString(found);
    return got === want ? [] : [`${path} is ${JSON.stringify(got)}, want ${JSON.stringify(want)}`];
  });
  return failures.length === 0 ? undefined : failures.join('; ');
}

/** Follows a dotted path through objects (and arrays, by index); undefined when any step is missing. */
export function readPath(document: unknown, path: string): unknown {
  let current: unknown = document;
  for (const step of path.split('.')) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, step)) return undefined;
    current = (current as Record<string, unknown>)[step];
  }
  return current;
}

function asString(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}
