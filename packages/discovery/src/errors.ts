/**
 * Errors of the discovery client. Each says what was wrong and what to do about it, because the
 * person reading it is usually the owner of a calling service, not of the operator.
 */
import { formatTags, isEmptyFilter, type TagFilter } from './tags.ts';

/** Base class, so callers can tell discovery failures from the failures of their own calls. */
export class DiscoveryError extends Error {
  override name = 'DiscoveryError';
}

/** What a selection knew when it found nothing to pick. */
export interface NoInstanceDetails {
  readonly service: string;
  readonly namespace: string;
  /** The tag filter of the failed selection, if any. */
  readonly filter: TagFilter | undefined;
  /** Instances of the service known at all, whatever their tags or weight. */
  readonly known: number;
  /** Instances that match the filter but have weight 0 (out of rotation). */
  readonly drained: number;
}

/**
 * Nothing can be picked: the service has no known instance, none matches the tags, or every match
 * has weight 0. (Ejected instances never cause this: when all matches are ejected, selection falls
 * back to them rather than failing, see selector.ts.)
 */
export class NoInstanceError extends DiscoveryError {
  override name = 'NoInstanceError';
  readonly service: string;
  readonly namespace: string;
  readonly filter: TagFilter | undefined;

  constructor(details: NoInstanceDetails) {
    super(noInstanceMessage(details));
    this.service = details.service;
    this.namespace = details.namespace;
    this.filter = details.filter;
  }
}

function noInstanceMessage(d: NoInstanceDetails): string {
  const filtered = d.filter !== undefined && !isEmptyFilter(d.filter);
  const what = filtered ? `matches tags ${formatTags(d.filter ?? {})}` : 'is known';
  let message = `no instance of ${d.service} in namespace ${d.namespace} ${what}: is a ServiceInstance registered there?`;
  if (d.drained > 0) {
    message += ` ${count(d.drained, 'matching instance has', 'matching instances have')} weight 0 (out of rotation): raise the weight in the ServiceInstance to send traffic there.`;
  } else if (filtered && d.known > 0) {
    message += ` ${count(d.known, 'instance is', 'instances are')} known, none with these tags: compare the filter with spec.tags and spec.endpoints[].tags of the ServiceInstance.`;
  }
  return message;
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** An option of the selector is out of range; the message names it and its allowed values. */
export class DiscoveryConfigError extends DiscoveryError {
  override name = 'DiscoveryConfigError';
}

/** An instance handed to the selector cannot be used (e.g. a negative weight). */
export class InvalidInstanceError extends DiscoveryError {
  override name = 'InvalidInstanceError';
}

/**
 * The registry could not be read before a deadline and nothing is known about the service yet. Once
 * a service has been read, outages never raise this: the last known instances keep being served.
 */
export class RegistryUnavailableError extends DiscoveryError {
  override name = 'RegistryUnavailableError';
}
