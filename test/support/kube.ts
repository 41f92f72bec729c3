/**
 * Kubernetes helpers for integration tests on the bed: CRD installation, namespaces, pods whose
 * status the test sets (the bed has no kubelet), and ServiceInstance/Registry objects.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  loadYaml,
  setHeaderOptions,
  type KubeConfig,
  type V1CustomResourceDefinition,
  type V1Pod,
} from '@kubernetes/client-node';
import { REPO_ROOT } from '../../testbed/provision.ts';

/** Installs (or updates) the CRDs from crds/ and waits until they are Established. */
export async function installCrds(kc: KubeConfig): Promise<void> {
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  const dir = join(REPO_ROOT, 'crds');
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.yaml'))) {
    const crd = loadYaml<V1CustomResourceDefinition>(await readFile(join(dir, file), 'utf8'));
    const name = crd.metadata?.name ?? '';
    try {
      const existing = await ext.readCustomResourceDefinition({ name });
      crd.metadata = { ...crd.metadata, resourceVersion: existing.metadata?.resourceVersion };
      await ext.replaceCustomResourceDefinition({ name, body: crd });
    } catch (err: unknown) {
      if ((err as { code?: number }).code !== 404) throw err;
      try {
        await ext.createCustomResourceDefinition({ body: crd });
      } catch (createErr: unknown) {
        // Another test file created it meanwhile.
        if ((createErr as { code?: number }).code !== 409) throw createErr;
      }
    }
    for (let i = 0; ; i++) {
      const got = await ext.readCustomResourceDefinition({ name });
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (i > 200) throw new Error(`CRD ${name} did not become Established`);
      await sleep(50);
    }
  }
  // Discovery catches up a moment after Established.
  const custom = kc.makeApiClient(CustomObjectsApi);
  for (let i = 0; ; i++) {
    try {
      await custom.listClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'registries', limit: 1 });
      await custom.listClusterCustomObject({ group: 'registrar.dev', version: 'v1alpha1', plural: 'serviceinstances', limit: 1 });
      return;
    } catch (err: unknown) {
      if (i > 100) throw err;
      await sleep(100);
    }
  }
}

/** Creates a namespace with labels. */
export async function createNamespace(kc: KubeConfig, name: string, labels: Record<string, string> = {}): Promise<void> {
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name, labels } } });
}

/** Options of {@link createPod}. */
export interface PodOptions {
  readonly labels: Record<string, string>;
  readonly ports?: { name?: string; containerPort: number }[];
  /** Bind to a (fictitious) node so deletion is graceful and the pod lingers as terminating. */
  readonly nodeName?: string;
}

/** Creates a pod (never started: the bed has no kubelet). */
export async function createPod(kc: KubeConfig, namespace: string, name: string, o: PodOptions): Promise<V1Pod> {
  return kc.makeApiClient(CoreV1Api).createNamespacedPod({
    namespace,
    body: {
      metadata: { name, labels: o.labels },
      spec: {
        ...(o.nodeName ? { nodeName: o.nodeName } : {}),
        containers: [{ name: 'app', image: 'registry.invalid/app:1', ports: o.ports ?? [{ name: 'http', containerPort: 8080 }] }],
        terminationGracePeriodSeconds: 30,
      },
    },
  });
}

/** Sets a pod's Ready condition and IP through the status subresource, as a kubelet would. */
export async function setPodReady(kc: KubeConfig, namespace: string, name: string, ip: string, ready: boolean): Promise<void> {
  await kc.makeApiClient(CoreV1Api).patchNamespacedPodStatus(
    {
      namespace,
      name,
      body: {
        status: {
          phase: 'Running',
          podIP: ip,
          podIPs: [{ ip }],
          conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: new Date() }],
        },
      },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** Deletes a pod; with a grace period a node-bound pod stays, terminating, until deleted with 0. */
export async function deletePod(kc: KubeConfig, namespace: string, name: string, gracePeriodSeconds: number): Promise<void> {
  await kc.makeApiClient(CoreV1Api).deleteNamespacedPod({ namespace, name, gracePeriodSeconds });
}

const G = { group: 'registrar.dev', version: 'v1alpha1' };

/** Creates a ServiceInstance. */
export async function createServiceInstance(
  kc: KubeConfig,
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
): Promise<unknown> {
  return kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    ...G,
    plural: 'serviceinstances',
    namespace,
    body: { apiVersion: 'registrar.dev/v1alpha1', kind: 'ServiceInstance', metadata: { name }, spec },
  });
}

/** Merge-patches a ServiceInstance's spec. */
export async function patchServiceInstance(kc: KubeConfig, namespace: string, name: string, spec: Record<string, unknown>): Promise<void> {
  await kc
    .makeApiClient(CustomObjectsApi)
    .patchNamespacedCustomObject(
      { ...G, plural: 'serviceinstances', namespace, name, body: { spec } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
}

/** Reads a ServiceInstance (undefined when gone). */
export async function getServiceInstance(kc: KubeConfig, namespace: string, name: string): Promise<ServiceInstanceView | undefined> {
  try {
    return (await kc
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ ...G, plural: 'serviceinstances', namespace, name })) as ServiceInstanceView;
  } catch (err: unknown) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

/** Deletes a ServiceInstance. */
export async function deleteServiceInstance(kc: KubeConfig, namespace: string, name: string): Promise<void> {
  await kc.makeApiClient(CustomObjectsApi).deleteNamespacedCustomObject({ ...G, plural: 'serviceinstances', namespace, name });
}

/** Creates a Registry. */
export async function createRegistry(kc: KubeConfig, name: string, spec: Record<string, unknown>): Promise<unknown> {
  return kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
    ...G,
    plural: 'registries',
    body: { apiVersion: 'registrar.dev/v1alpha1', kind: 'Registry', metadata: { name }, spec },
  });
}

/** What tests read from a ServiceInstance. */
export interface ServiceInstanceView {
  metadata: { name: string; namespace: string; generation?: number; finalizers?: string[]; uid?: string };
  status?: {
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason: string; message: string; observedGeneration?: number }[];
    endpoints?: { total: number; ready: number; registered: number };
    registrations?: { registry: string; namespace: string; service?: string; entries: number; message?: string }[];
  };
}

/** Events recorded on an object. */
export async function eventsFor(
  kc: KubeConfig,
  namespace: string,
  name: string,
): Promise<{ reason: string; message: string; type: string }[]> {
  const list = await kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
  return list.items.map((e) => ({ reason: e.reason ?? '', message: e.message ?? '', type: e.type ?? '' }));
}

/** Polls until `check` returns a value other than undefined, or fails with the last observation. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err: unknown) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await sleep(100);
  }
}

/**
 * The apiserver's message when it refuses what `send` writes (400 Bad Request or 422 Invalid), or
 * undefined when the write is admitted; any other failure is thrown.
 */
export async function apiserverRefusal(send: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await send();
    return undefined;
  } catch (err: unknown) {
    const { code, body } = err as { code?: number; body?: unknown };
    if (code !== 422 && code !== 400) throw err;
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    try {
      const { message } = JSON.parse(text) as { message?: unknown };
      return typeof message === 'string' ? message : text;
    } catch {
      return text;
    }
  }
}
