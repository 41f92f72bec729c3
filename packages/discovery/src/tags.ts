/**
 * Tag filters. Instances carry tags as a `k=v` string map (the ServiceInstance's spec.tags merged
 * with its endpoint's tags, as the operator writes them); a filter is such a map too, and an
 * instance matches when it has every key of the filter with the same value.
 */

/** Tags an instance must all carry, e.g. `{zone: 'a'}`. Treat a filter as immutable once used. */
export type TagFilter = Readonly<Record<string, string>>;

/** True when `tags` has every key of `filter` with the same value. An empty filter matches all. */
export function matchesTags(tags: Readonly<Record<string, string>> | undefined, filter: TagFilter): boolean {
  for (const key in filter) {
    // Own keys only: a filter on `constructor` must not match Object.prototype's.
    if (tags === undefined || !Object.hasOwn(tags, key) || tags[key] !== filter[key]) return false;
  }
  return true;
}

/** True when the filter has no key (it then selects every instance). */
export function isEmptyFilter(filter: TagFilter): boolean {
  for (const _ in filter) return false;
  return true;
}

/** The filter for messages, keys sorted: `{version=1.0, zone=a}`. */
export function formatTags(filter: TagFilter): string {
  return `{${sortedEntries(filter)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ')}}`;
}

/** A string equal for equal filters whatever their key order, to share state between them. */
export function tagFilterKey(filter: TagFilter): string {
  return JSON.stringify(sortedEntries(filter));
}

function sortedEntries(filter: TagFilter): [string, string][] {
  return Object.entries(filter).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
