/**
 * The objects a scenario creates, decided up front: namespaces, ServiceInstances (static
 * endpoints or pod selectors), pods with their IPs, and therefore exactly which registry entries
 * the operator must end up writing. Spreading the objects over several namespaces is what a
 * platform team's cluster looks like, and every namespace is a registry namespace with its own lease.
 */
import type { RegistryEntry } from '../../src/registry/types.ts';
import { benchIp, mapAll, type BenchKube, type PodFixture, type ServiceInstanceFixture } from './kube.ts';

/** An entry the operator must write. */
export interface ExpectedEntry {
  readonly namespace: string;
  readonly siName: string;
  readonly service: string;
  readonly address: string;
  readonly port: number;
  /** What the operator writes as `source` (`pod/...` or `static/...`). */
  readonly source: string;
}

/** Objects to create and the entries they lead to. */
export interface Layout {
  readonly namespaces: readonly string[];
  readonly serviceInstances: ReadonlyMap<string, ServiceInstanceFixture[]>;
  readonly pods: ReadonlyMap<string, PodFixture[]>;
  /** `namespace/name` → endpoints the ServiceInstance must report registered. */
  readonly expectedPerSi: ReadonlyMap<string, number>;
  readonly entries: readonly ExpectedEntry[];
}

/** The port every benchmark endpoint listens on. */
export const PORT = 8080;

function namespaces(prefix: string, k: number): string[] {
  return Array.from({ length: k }, (_, i) => `${prefix}-${i}`);
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/** `n` ServiceInstances with one static endpoint each, round-robin over `k` namespaces. */
export function staticLayout(nsPrefix: string, k: number, n: number, ipBlock = 0): Layout {
  const nss = namespaces(nsPrefix, k);
  const sis = new Map<string, ServiceInstanceFixture[]>();
  const expectedPerSi = new Map<string, number>();
  const entries: ExpectedEntry[] = [];
  for (let i = 0; i < n; i++) {
    const ns = nss[i % k] as string;
    const name = `si-${i}`;
    const service = `svc-${i}`;
    const address = benchIp(i, ipBlock);
    push(sis, ns, { name, spec: { service, endpoints: [{ address, port: PORT }] } });
    expectedPerSi.set(`${ns}/${name}`, 1);
    entries.push({ namespace: ns, siName: name, service, address, port: PORT, source: `static/${ns}/${name}/0` });
  }
  return { namespaces: nss, serviceInstances: sis, pods: new Map(), expectedPerSi, entries };
}

/**
 * `services` ServiceInstances selecting `podsPerService` pods each, of which the first `ready` are
 * Ready with an IP (the others exist but never became Ready), plus `unselected` pods per service
 * that no ServiceInstance selects (the rest of a cluster, which the operator caches all the same).
 */
export function podLayout(
  nsPrefix: string,
  k: number,
  services: number,
  podsPerService: number,
  o: { ready?: number; unselected?: number; ipBlock?: number } = {},
): Layout {
  const ready = o.ready ?? podsPerService;
  const nss = namespaces(nsPrefix, k);
  const sis = new Map<string, ServiceInstanceFixture[]>();
  const pods = new Map<string, PodFixture[]>();
  const expectedPerSi = new Map<string, number>();
  const entries: ExpectedEntry[] = [];
  let ipIndex = 0;
  for (let j = 0; j < services; j++) {
    const ns = nss[j % k] as string;
    const name = `si-${j}`;
    const service = `svc-${j}`;
    push(sis, ns, { name, spec: { service, selector: { matchLabels: { app: service } }, port: 'http' } });
    expectedPerSi.set(`${ns}/${name}`, ready);
    for (let p = 0; p < podsPerService; p++) {
      const podName = `${service}-${p}`;
      if (p < ready) {
        const address = benchIp(ipIndex++, o.ipBlock ?? 0);
        push(pods, ns, { name: podName, labels: { app: service }, ip: address });
        entries.push({ namespace: ns, siName: name, service, address, port: PORT, source: `pod/${ns}/${podName}` });
      } else {
        push(pods, ns, { name: podName, labels: { app: service } });
      }
    }
    for (let u = 0; u < (o.unselected ?? 0); u++) push(pods, ns, { name: `other-${j}-${u}`, labels: { app: `other-${j}` } });
  }
  return { namespaces: nss, serviceInstances: sis, pods, expectedPerSi, entries };
}

/** The etcd key of an expected entry under `prefix`. */
export function etcdKey(prefix: string, e: ExpectedEntry): string {
  return `${prefix}/${e.namespace}/${e.service}/${e.address}:${e.port}`;
}

/** The entry as the operator would hand it to a backend (for raw writes with identical values). */
export function registryEntry(e: ExpectedEntry, clusterId: string): RegistryEntry {
  return {
    registryNamespace: e.namespace,
    k8sNamespace: e.namespace,
    owner: { clusterId, namespace: e.namespace, name: e.siName },
    endpoint: {
      service: e.service,
      instanceId: `${e.address}:${e.port}`,
      address: e.address,
      port: e.port,
      weight: 1,
      tags: {},
      metadata: {},
      source: e.source,
    },
  };
}

/** Creates the layout's pods (made Ready where they have an IP) and ServiceInstances; resolves the seconds it took. */
export async function createLayout(kube: BenchKube, layout: Layout, labels: Record<string, string>): Promise<number> {
  const started = performance.now();
  await kube.createNamespaces(layout.namespaces, labels);
  const tasks: (() => Promise<void>)[] = [];
  for (const [ns, list] of layout.pods)
    for (const p of list)
      tasks.push(async () => {
        await kube.createPod(ns, p);
        if (p.ip !== undefined) await kube.setPodReady(ns, p.name, p.ip, true);
      });
  for (const [ns, list] of layout.serviceInstances) for (const si of list) tasks.push(() => kube.createServiceInstances(ns, [si]));
  await mapAll(tasks);
  return (performance.now() - started) / 1000;
}
