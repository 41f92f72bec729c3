/**
 * One copy of each string that many cached objects repeat. JSON parsing gives every object its own
 * copy of every value: at 10,000 ServiceInstances the condition types, reasons and messages, the
 * API version, the finalizer, registry and namespace names and the timestamps of one second were
 * held 10,000 times over. The table is bounded: past the limit it starts over, which only costs
 * sharing, never correctness.
 */
const interned = new Map<string, string>();
const INTERNED_MAX = 50_000;

/** The one shared copy of `s`. */
export function intern(s: string): string {
  const known = interned.get(s);
  if (known !== undefined) return known;
  if (interned.size >= INTERNED_MAX) interned.clear();
  interned.set(s, s);
  return s;
}

/** Strings longer than this are rarely repeated (and cost the table more than sharing saves). */
const INTERN_MAX_LENGTH = 128;

/**
 * Replaces, in place, every string of a parsed JSON value with its shared copy, except the values
 * of the keys in `unique` (at any depth: names, uids and resource versions, which no two objects
 * share and which would only fill the table). Returns the value.
 */
export function internJson<T>(value: T, unique: ReadonlySet<string>): T {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (typeof v === 'string') value[i] = v.length <= INTERN_MAX_LENGTH ? intern(v) : v;
      else if (v !== null && typeof v === 'object') internJson(v, unique);
    }
  } else if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const v = o[k];
      if (typeof v === 'string') {
        if (v.length <= INTERN_MAX_LENGTH && !unique.has(k)) o[k] = intern(v);
      } else if (v !== null && typeof v === 'object') internJson(v, unique);
    }
  }
  return value;
}
