/**
 * Registry and ServiceInstance objects for unit tests above the apiserver, as they would come out
 * of the informer caches (CRD defaults applied).
 */
import type { Registry as RegistryResource, ServiceInstance } from '../../src/api/v1alpha1/types.ts';

/** An etcd Registry named `name` (uid `<name>-uid`), default, admitting every namespace; `spec` overrides fields. */
export function registryResource(name: string, spec: Partial<RegistryResource['spec']> = {}): RegistryResource {
  return {
    apiVersion: 'registrar.dev/v1alpha1',
    kind: 'Registry',
    metadata: { name, uid: `${name}-uid`, generation: 1 },
    spec: {
      type: 'etcd',
      default: true,
      namespaceSelector: {},
      namespace: '{namespace}',
      leaseTTLSeconds: 30,
      policy: 'sync',
      dryRun: false,
      etcd: { endpoints: ['http://127.0.0.1:1'], prefix: '/services', format: 'json' },
      ...spec,
    },
  };
}

/** A ServiceInstance with one static endpoint, 10.0.0.1:80; `metadata` adds fields (uid, finalizers, ...). */
export function staticServiceInstance(
  namespace: string,
  name: string,
  service: string,
  metadata: Partial<NonNullable<ServiceInstance['metadata']>> = {},
): ServiceInstance {
  return {
    apiVersion: 'registrar.dev/v1alpha1',
    kind: 'ServiceInstance',
    metadata: { namespace, name, ...metadata },
    spec: { service, endpoints: [{ address: '10.0.0.1', port: 80 }], weight: 1 },
  };
}
