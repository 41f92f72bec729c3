/**
 * Which Registries a ServiceInstance writes to, and which it is refused. Isolation lives here:
 * a Registry accepts writes only from namespaces its namespaceSelector admits.
 */
import { selectorMatches, type LabelSelectorLike } from '../source/endpoints.ts';

/** The parts of a Registry resource target resolution reads. */
export interface TargetRegistry {
  readonly metadata?: { readonly name?: string };
  readonly spec: {
    readonly default?: boolean;
    readonly namespaceSelector?: LabelSelectorLike;
  };
}

/** A Registry the ServiceInstance named but may not (or cannot) use. */
export interface Refusal {
  readonly registry: string;
  readonly reason: 'RegistryNotFound' | 'NamespaceNotAdmitted';
  readonly message: string;
}

/** Result of {@link resolveTargets}. */
export interface Targets<R extends TargetRegistry> {
  readonly targets: readonly R[];
  readonly refusals: readonly Refusal[];
}

/** Whether a Registry admits writes from a namespace with these labels. A missing selector admits nothing. */
export function admits(registry: TargetRegistry, namespaceLabels: Readonly<Record<string, string>>): boolean {
  const selector = registry.spec.namespaceSelector;
  if (!selector) return false;
  return selectorMatches(selector, namespaceLabels);
}

/**
 * Resolves the target Registries: the named ones if `spec.registries` is set (each must exist and
 * admit the namespace, or it is refused), else every Registry marked default that admits the
 * namespace. Targets come sorted by name.
 */
export function resolveTargets<R extends TargetRegistry>(
  named: readonly string[] | undefined,
  namespace: string,
  namespaceLabels: Readonly<Record<string, string>>,
  registries: readonly R[],
): Targets<R> {
  const targets: R[] = [];
  const refusals: Refusal[] = [];
  if (named && named.length > 0) {
    const byName = new Map(registries.map((r) => [r.metadata?.name ?? '', r]));
    for (const name of [...new Set(named)].sort()) {
      const reg = byName.get(name);
      if (!reg) {
        refusals.push({
          registry: name,
          reason: 'RegistryNotFound',
          message: `Registry "${name}" does not exist; create it or remove it from spec.registries`,
        });
      } else if (!admits(reg, namespaceLabels)) {
        refusals.push({
          registry: name,
          reason: 'NamespaceNotAdmitted',
          message: `Registry "${name}" does not admit namespace "${namespace}" (its spec.namespaceSelector does not match the namespace's labels); nothing was written to it`,
        });
      } else {
        targets.push(reg);
      }
    }
  } else {
    for (const reg of registries) if (reg.spec.default === true && admits(reg, namespaceLabels)) targets.push(reg);
    // Ordinal order, the same in every locale (and without loading ICU's collation data).
    targets.sort((a, b) => {
      const x = a.metadata?.name ?? '';
      const y = b.metadata?.name ?? '';
      return x < y ? -1 : x > y ? 1 : 0;
    });
  }
  return { targets, refusals };
}
