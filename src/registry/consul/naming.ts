/**
 * What the Consul backend's services are called: service names and Consul namespaces from the
 * Registry's templates, service ids of this cluster, and the registration of an instance. The
 * Consul counterpart of the etcd backend's key layout.
 */
import { renderConsulServiceName, renderTemplate, SERVICE_NAME_TEMPLATE_PLACEHOLDERS, validateTemplate } from '../template.ts';
import type { RegistryEntry } from '../types.ts';
import type { ServiceRegistration } from './client.ts';
import { heartbeatServiceId, instanceRegistration, instanceServiceId } from './codec.ts';

/** A bexpr string literal, for the filters of agent reads. */
export function lit(value: string): string {
  return JSON.stringify(value);
}

/** `<registryNamespace>/<service>/<instanceId>`: an entry's place, for messages. */
export function place(entry: RegistryEntry): string {
  return `${entry.registryNamespace}/${entry.endpoint.service}/${entry.endpoint.instanceId}`;
}

/** Options of {@link ConsulNaming}. */
export interface ConsulNamingOptions {
  readonly clusterId: string;
  /** Template over `{service}` and `{namespace}`. */
  readonly serviceNameTemplate: string;
  /** Template over `{namespace}`; '' on open-source Consul. */
  readonly namespaceTemplate: string;
  /** DeregisterCriticalServiceAfter of every instance. */
  readonly reapAfterSeconds: number;
}

/** Names, ids and registrations of one Registry's services. */
export class ConsulNaming {
  readonly #clusterId: string;
  readonly #serviceNameTemplate: string;
  readonly #namespaceTemplate: string;
  readonly #reapAfter: number;

  /** Validates both templates. */
  constructor(options: ConsulNamingOptions) {
    validateTemplate(options.serviceNameTemplate, { field: 'spec.consul.serviceName', allowed: SERVICE_NAME_TEMPLATE_PLACEHOLDERS });
    validateTemplate(options.namespaceTemplate, { field: 'spec.consul.namespace', allowed: ['namespace'] });
    this.#clusterId = options.clusterId;
    this.#serviceNameTemplate = options.serviceNameTemplate;
    this.#namespaceTemplate = options.namespaceTemplate;
    this.#reapAfter = options.reapAfterSeconds;
  }

  /** Whether registry namespaces map to Consul Enterprise namespaces (a namespace template is set). */
  get usesConsulNamespaces(): boolean {
    return this.#namespaceTemplate !== '';
  }

  /** The Consul namespace of a registry namespace; '' is the default. */
  consulNamespace(registryNamespace: string): string {
    return renderTemplate(
      this.#namespaceTemplate,
      { namespace: registryNamespace },
      { field: 'spec.consul.namespace', allowed: ['namespace'], allowEmpty: true },
    );
  }

  /** The Consul service name of a service in a registry namespace. */
  serviceName(registryNamespace: string, service: string): string {
    return renderConsulServiceName(this.#serviceNameTemplate, { namespace: registryNamespace, service });
  }

  /** The service id of an entry of this cluster. */
  serviceId(entry: RegistryEntry): string {
    return instanceServiceId(this.#clusterId, entry.registryNamespace, entry.endpoint.service, entry.endpoint.instanceId);
  }

  /** The service id of this cluster's heartbeat in a registry namespace. */
  heartbeatServiceId(registryNamespace: string): string {
    return heartbeatServiceId(this.#clusterId, registryNamespace);
  }

  /** The registration of an entry, aliasing the heartbeat `heartbeatServiceId`. */
  registration(heartbeatServiceId: string, entry: RegistryEntry): ServiceRegistration {
    return instanceRegistration(entry, {
      clusterId: this.#clusterId,
      name: this.serviceName(entry.registryNamespace, entry.endpoint.service),
      heartbeatServiceId,
      deregisterAfterSeconds: this.#reapAfter,
    });
  }
}
