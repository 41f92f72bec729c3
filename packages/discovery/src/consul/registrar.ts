/**
 * `consulRegistrar()`: self-registration for processes outside Kubernetes (VMs, laptops, jobs).
 * The entry looks to consumers exactly like one the operator writes for a pod, and it has an owner
 * of its own (`process:<hostname>`), so the operator never changes or removes it.
 *
 * Liveness is a TTL check on the agent that this process passes every TTL/3. If the process dies
 * without closing, the check turns critical within the TTL (the entry leaves `?passing=true`) and
 * the agent deregisters it after `deregisterAfterSeconds`. `close()` deregisters at once. If the
 * agent restarts and forgets the service, the next pass finds out and registers it again.
 */
import { hostname as osHostname } from 'node:os';

import { DiscoveryConfigError, DiscoveryError } from '../errors.ts';
import { resolveNamespace, type Registrar, type Registration, type SelfEndpoint } from '../source.ts';
import { ConsulHttp, ConsulRequestError, type ConsulConnectionOptions } from './http.ts';
import { silentLogger, type DiscoveryLogger } from '../logger.ts';
import { consulNamespaceOf, consulServiceName, DEFAULT_SERVICE_NAME_TEMPLATE, literal } from './naming.ts';
import { describeOwner, ownedBy, selfCheckId, selfOwner, selfRegistration, type RegistrationBody } from './registration.ts';

/** Options of {@link consulRegistrar}. */
export interface ConsulRegistrarOptions extends ConsulConnectionOptions {
  /** Consul Enterprise namespace template over `{namespace}`, as the Registry's; absent or '' on open-source Consul. */
  readonly consulNamespace?: string;
  /** Service name template over `{service}` and `{namespace}`, as the Registry's; default `{service}`. */
  readonly serviceName?: string;
  /** Registry namespace to register into: default `$KUBE_REGISTRAR_NAMESPACE`, else `default`. */
  readonly namespace?: string;
  /** TTL of the check this process passes (every TTL/3), whole seconds from 3; default 10. */
  readonly ttlSeconds?: number;
  /** How long the entry of a dead process stays listed as critical before the agent removes it; default and minimum 60 (Consul's). */
  readonly deregisterAfterSeconds?: number;
  /** Deadline of every call, ms; default 5000. */
  readonly callTimeoutMs?: number;
  /** Host name written into the owner, the source and the id; default `os.hostname()`. */
  readonly hostname?: string;
  readonly logger?: DiscoveryLogger;
}

/** The service id is taken by an entry this process does not own; nothing was written. */
export class RegistrationConflictError extends DiscoveryError {
  override name = 'RegistrationConflictError';
}

/** Default TTL of a self-registration. */
export const DEFAULT_SELF_TTL_SECONDS = 10;
/** Consul's least DeregisterCriticalServiceAfter: it raises shorter values to this. */
export const MIN_DEREGISTER_AFTER_SECONDS = 60;
const DEFAULT_CALL_TIMEOUT_MS = 5000;

/** A registrar writing into one registry namespace through one Consul agent. See the module comment. */
export function consulRegistrar(options: ConsulRegistrarOptions): Registrar {
  return new ConsulRegistrar(options);
}

/** What registrations share. */
interface RegistrarContext {
  readonly http: ConsulHttp;
  readonly ns: string;
  readonly timeoutMs: number;
  readonly logger: DiscoveryLogger;
}

class ConsulRegistrar implements Registrar {
  readonly #ctx: RegistrarContext;
  readonly #namespace: string;
  readonly #template: string;
  readonly #ttl: number;
  readonly #deregisterAfter: number;
  readonly #hostname: string;

  constructor(options: ConsulRegistrarOptions) {
    this.#namespace = resolveNamespace(options.namespace);
    this.#template = options.serviceName ?? DEFAULT_SERVICE_NAME_TEMPLATE;
    consulServiceName(this.#template, this.#namespace, 'probe'); // refuses a bad template now
    this.#ttl = options.ttlSeconds ?? DEFAULT_SELF_TTL_SECONDS;
    this.#deregisterAfter = options.deregisterAfterSeconds ?? MIN_DEREGISTER_AFTER_SECONDS;
    if (!Number.isInteger(this.#ttl) || this.#ttl < 3) {
      throw new DiscoveryConfigError(`ttlSeconds is ${this.#ttl}: use whole seconds from 3 (the check is passed every TTL/3)`);
    }
    if (!Number.isInteger(this.#deregisterAfter) || this.#deregisterAfter < MIN_DEREGISTER_AFTER_SECONDS) {
      throw new DiscoveryConfigError(
        `deregisterAfterSeconds is ${this.#deregisterAfter}: use whole seconds from ${MIN_DEREGISTER_AFTER_SECONDS}, Consul's minimum`,
      );
    }
    this.#hostname = options.hostname ?? osHostname();
    this.#ctx = {
      http: new ConsulHttp(options),
      ns: consulNamespaceOf(options.consulNamespace, this.#namespace),
      timeoutMs: options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS,
      logger: options.logger ?? silentLogger,
    };
  }

  /**
   * Registers `endpoint` and keeps it alive until the registration is closed.
   *
   * @throws {RegistrationConflictError} when its id or its address and port are registered by
   *   someone else on the agent; nothing is written then.
   */
  async register(endpoint: SelfEndpoint): Promise<Registration> {
    const body = selfRegistration(endpoint, {
      hostname: this.#hostname,
      pid: process.pid,
      namespace: this.#namespace,
      name: consulServiceName(this.#template, this.#namespace, endpoint.service),
      ttlSeconds: this.#ttl,
      deregisterAfterSeconds: this.#deregisterAfter,
    });
    const registration = new ConsulSelfRegistration(
      this.#ctx,
      body,
      selfOwner(this.#hostname, this.#namespace, endpoint.service),
      this.#ttl,
    );
    await registration.start();
    return registration;
  }
}

/** Whether a pass failed because the agent no longer knows the check (it restarted, or someone removed the service). */
function agentForgot(err: unknown): boolean {
  if (!(err instanceof ConsulRequestError)) return false;
  return err.status === 404 || (err.status === 500 && /does not have associated TTL|unknown check/i.test(err.consulMessage));
}

/** One live self-registration: passes its check on a timer it owns, deregisters on close. */
class ConsulSelfRegistration implements Registration {
  readonly id: string;
  readonly #ctx: RegistrarContext;
  readonly #body: RegistrationBody;
  readonly #owner: ReturnType<typeof selfOwner>;
  readonly #periodMs: number;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(ctx: RegistrarContext, body: RegistrationBody, owner: ReturnType<typeof selfOwner>, ttlSeconds: number) {
    this.id = body.ID;
    this.#ctx = ctx;
    this.#body = body;
    this.#owner = owner;
    this.#periodMs = (ttlSeconds * 1000) / 3;
  }

  /** Writes the entry (after making sure it takes nothing from anyone) and starts passing its check. */
  async start(): Promise<void> {
    await this.#write();
    this.#schedule();
  }

  /** Deregisters now and stops passing the check. Idempotent: later calls share the first one's result. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#beating;
    try {
      await this.#call('PUT', `/v1/agent/service/deregister/${encodeURIComponent(this.id)}`);
    } catch (err: unknown) {
      if (err instanceof ConsulRequestError && err.status === 404) return; // already gone: the agent forgot it
      throw new DiscoveryError(
        `could not deregister ${this.id} from Consul at ${this.#ctx.http.root}: it leaves ?passing=true within its TTL anyway and is removed later`,
        { cause: err },
      );
    }
  }

  #schedule(): void {
    if (this.#closing !== undefined) return;
    // unref: a registration alone must not keep a process alive that has nothing else to do.
    this.#timer = setTimeout(() => {
      this.#beating = this.#beat().finally(() => {
        this.#beating = undefined;
        this.#schedule();
      });
    }, this.#periodMs).unref();
  }

  async #beat(): Promise<void> {
    try {
      await this.#call('PUT', `/v1/agent/check/pass/${encodeURIComponent(selfCheckId(this.id))}`);
    } catch (err: unknown) {
      if (this.#closing !== undefined) return;
      if (!agentForgot(err)) {
        this.#ctx.logger.warn({ err, serviceId: this.id }, 'passing the Consul TTL check failed; trying again at the next interval');
        return;
      }
      this.#ctx.logger.info({ serviceId: this.id }, 'the Consul agent forgot this registration (restarted?); registering it again');
      try {
        await this.#write();
      } catch (again: unknown) {
        this.#ctx.logger.error({ err: again, serviceId: this.id }, 'registering again in Consul failed; trying again at the next interval');
      }
    }
  }

  /** Refuses to take over an id or an endpoint of someone else, then registers. */
  async #write(): Promise<void> {
    await this.#checkIdIsFree();
    await this.#checkEndpointIsFree();
    await this.#call('PUT', '/v1/agent/service/register', { 'replace-existing-checks': 'true' }, this.#body);
  }

  async #checkIdIsFree(): Promise<void> {
    let existing: unknown;
    try {
      existing = (await this.#call('GET', `/v1/agent/service/${encodeURIComponent(this.id)}`)).body;
    } catch (err: unknown) {
      if (err instanceof ConsulRequestError && err.status === 404) return;
      throw err;
    }
    const meta = metaOf(existing);
    if (ownedBy(meta, this.#owner)) return;
    throw new RegistrationConflictError(
      `cannot register ${this.#body.Name} at ${this.#body.Address}:${this.#body.Port}: service id ${this.id} is taken on the Consul agent by ` +
        `${describeOwner(meta)}, and this process (${this.#owner.cluster}) never replaces an entry of another owner; deregister that service or register another address`,
    );
  }

  async #checkEndpointIsFree(): Promise<void> {
    const filter = [
      `Service == ${literal(this.#body.Name)}`,
      `Address == ${literal(this.#body.Address)}`,
      `Port == ${this.#body.Port}`,
      `ID != ${literal(this.id)}`,
    ].join(' and ');
    const others = Object.values(asRecord((await this.#call('GET', '/v1/agent/services', { filter })).body));
    const other = others[0];
    if (other === undefined) return;
    throw new RegistrationConflictError(
      `cannot register ${this.#body.Name} at ${this.#body.Address}:${this.#body.Port}: the Consul agent already lists that endpoint as service ` +
        `${JSON.stringify(asRecord(other)['ID'])} of ${describeOwner(metaOf(other))}; consumers would see it twice. ` +
        'If it is a leftover of a process on another host, it is removed once its check has been critical for a minute; otherwise register another address or port',
    );
  }

  #call(method: 'GET' | 'PUT', path: string, query: Record<string, string> = {}, body?: unknown) {
    return this.#ctx.http.call(method, path, { query: { ...query, ns: this.#ctx.ns }, body, timeoutMs: this.#ctx.timeoutMs });
  }
}

function asRecord(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function metaOf(service: unknown): Record<string, string> {
  return Object.fromEntries(
    Object.entries(asRecord(asRecord(service)['Meta'])).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
}
