/**
 * Scenario client-propagation: how long a registry change takes to reach the client's watch
 * cache, beside how long the registry itself takes to deliver it to a bare watcher in the same
 * process. The difference is what the client adds (decoding, rebuilding the set, notifying); the
 * goal is a p99 under 50 ms beyond the registry's own delivery.
 *
 * etcd: entries in the operator's json format are put and deleted in turn under one service
 * (the bare watcher is an etcd3 prefix watch). Consul: instances are registered and
 * deregistered through the package's own registrar, in the operator's format (the bare watcher
 * is a blocking query loop on the same `?passing=true` endpoint without the client's 250 ms
 * floor between queries; changes are spaced further apart than that floor, which is what a
 * consumer of a real registry sees).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import {
  consulRegistrar,
  consulSource,
  DiscoveryClient,
  etcdSource,
  type DiscoverySource,
  type Instance,
} from '../../packages/discovery/src/index.ts';
import { encodeEntry, type EtcdValueFormat } from '../../src/registry/etcd/codec.ts';
import { withBed } from '../lib/bed.ts';
import type { ScenarioContext } from '../lib/context.ts';
import type { Figure, ScenarioResult } from '../lib/results.ts';
import { percentile } from '../lib/stats.ts';

const NAMESPACE = 'prop';
const SERVICE = 'echo';
const GOAL_MS = 50;

/** One change, as seen by the bare watcher and by the client. */
interface Change {
  readonly writtenAt: number;
  rawAt?: number;
  clientAt?: number;
}

/** What one registry measured in one run. */
export interface PropagationRun {
  readonly registry: string;
  readonly changes: number;
  readonly missed: number;
  readonly rawP50Ms: number;
  readonly rawP99Ms: number;
  readonly clientP50Ms: number;
  readonly clientP99Ms: number;
  /** p99 of (client − bare watcher) per change. */
  readonly addedP99Ms: number;
}

function summarise(registry: string, changes: readonly Change[]): PropagationRun {
  const seen = changes.filter((c) => c.rawAt !== undefined && c.clientAt !== undefined);
  const raw = seen.map((c) => c.rawAt! - c.writtenAt);
  const client = seen.map((c) => c.clientAt! - c.writtenAt);
  return {
    registry,
    changes: changes.length,
    missed: changes.length - seen.length,
    rawP50Ms: percentile(raw, 50),
    rawP99Ms: percentile(raw, 99),
    clientP50Ms: percentile(client, 50),
    clientP99Ms: percentile(client, 99),
    addedP99Ms: percentile(
      seen.map((c) => c.clientAt! - c.rawAt!),
      99,
    ),
  };
}

/** Waits until `change` has been seen by both, or `ms` passed. */
async function settled(change: Change, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while ((change.rawAt === undefined || change.clientAt === undefined) && performance.now() < deadline) await sleep(2);
}

/** Follows the client's cache of the service: `onSet` gets the number of instances on every change. */
async function followClient(source: DiscoverySource, onSet: (count: number) => void): Promise<DiscoveryClient> {
  const client = new DiscoveryClient({ source, initialReadTimeoutMs: 30_000 });
  const cache = client.cache(SERVICE);
  cache.subscribe((instances: readonly Instance[]) => onSet(instances.length));
  await client.ready(SERVICE);
  return client;
}

async function etcdRun(clientUrl: string, changes: number, gapMs: number): Promise<PropagationRun> {
  const prefix = `/prop-${Math.random().toString(36).slice(2, 8)}`;
  const key = `${prefix}/${NAMESPACE}/${SERVICE}/10.0.0.1:8080`;
  const format: EtcdValueFormat = 'json';
  const value = encodeEntry(format, {
    registryNamespace: NAMESPACE,
    k8sNamespace: NAMESPACE,
    owner: { clusterId: 'bench', namespace: NAMESPACE, name: SERVICE },
    endpoint: {
      service: SERVICE,
      instanceId: '10.0.0.1:8080',
      address: '10.0.0.1',
      port: 8080,
      weight: 1,
      tags: {},
      metadata: {},
      source: 'bench',
    },
  }).value;
  const writer = new Etcd3({ hosts: [clientUrl] });
  const measured: Change[] = [];
  let current: Change | undefined;
  const watcher = await writer.watch().prefix(`${prefix}/${NAMESPACE}/${SERVICE}/`).create();
  const onRaw = (): void => {
    if (current !== undefined) current.rawAt ??= performance.now();
  };
  watcher.on('put', onRaw);
  watcher.on('delete', onRaw);
  const client = await followClient(etcdSource({ hosts: clientUrl, prefix, namespace: NAMESPACE }), () => {
    if (current !== undefined) current.clientAt ??= performance.now();
  });
  try {
    for (let k = 0; k < changes; k++) {
      current = { writtenAt: performance.now() };
      measured.push(current);
      if (k % 2 === 0) await writer.put(key).value(value);
      else await writer.delete().key(key);
      await settled(current, 10_000);
      await sleep(gapMs * (0.5 + Math.random()));
    }
  } finally {
    await client.close();
    await watcher.cancel();
    await writer.delete().prefix(prefix);
    writer.close();
  }
  return summarise('etcd', measured);
}

/** A bare blocking-query loop on `?passing=true`, calling `onChange` when the result changes. */
async function rawConsulLoop(address: string, name: string, onChange: () => void, signal: AbortSignal): Promise<void> {
  let index = '0';
  let last = '';
  while (!signal.aborted) {
    try {
      const res = await fetch(`${address}/v1/health/service/${name}?passing=true&index=${index}&wait=60s`, { signal });
      index = res.headers.get('x-consul-index') ?? '0';
      const body = await res.text();
      if (body !== last) {
        if (last !== '') onChange();
        last = body;
      }
    } catch {
      if (!signal.aborted) await sleep(100);
    }
  }
}

async function consulRun(address: string, token: string | undefined, changes: number, gapMs: number): Promise<PropagationRun> {
  const service = `${SERVICE}-${Math.random().toString(36).slice(2, 8)}`;
  const auth = token !== undefined ? { token } : {};
  const registrar = consulRegistrar({ address, namespace: NAMESPACE, ...auth });
  const measured: Change[] = [];
  let current: Change | undefined;
  const stop = new AbortController();
  const raw = rawConsulLoop(
    address,
    service,
    () => {
      if (current !== undefined) current.rawAt ??= performance.now();
    },
    stop.signal,
  );
  const client = new DiscoveryClient({ source: consulSource({ address, namespace: NAMESPACE, ...auth }), initialReadTimeoutMs: 30_000 });
  client.cache(service).subscribe(() => {
    if (current !== undefined) current.clientAt ??= performance.now();
  });
  await client.ready(service);
  await sleep(500); // both blocking queries parked
  try {
    let registration: Awaited<ReturnType<typeof registrar.register>> | undefined;
    for (let k = 0; k < changes; k++) {
      current = { writtenAt: performance.now() };
      measured.push(current);
      if (registration === undefined) registration = await registrar.register({ service, address: '10.0.0.1', port: 8080 });
      else {
        await registration.close();
        registration = undefined;
      }
      await settled(current, 10_000);
      await sleep(gapMs * (0.5 + Math.random()));
    }
    await registration?.close();
  } finally {
    stop.abort();
    await raw;
    await client.close();
  }
  return summarise('Consul', measured);
}

/** Runs the scenario. */
export async function clientPropagation(ctx: ScenarioContext): Promise<ScenarioResult> {
  const small = ctx.options.scale === 'small';
  const etcdChanges = small ? 100 : 1000;
  const consulChanges = small ? 40 : 200;
  const runs: PropagationRun[][] = [];
  await withBed(ctx.log, async ({ bed }) => {
    ctx.onVersions(bed.versions);
    for (let r = 0; r < ctx.options.repeats; r++) {
      ctx.log(`client-propagation run ${r + 1}/${ctx.options.repeats}: ${etcdChanges} etcd changes, ${consulChanges} Consul changes`);
      const etcd = await etcdRun(bed.registryEtcd.clientUrl, etcdChanges, 20);
      const consul = await consulRun(bed.consulAddr, bed.consulToken, consulChanges, 400);
      for (const run of [etcd, consul]) {
        ctx.log(
          `  ${run.registry}: bare watch p99 ${run.rawP99Ms.toFixed(1)} ms, client p99 ${run.clientP99Ms.toFixed(1)} ms, added p99 ${run.addedP99Ms.toFixed(1)} ms, missed ${run.missed}`,
        );
      }
      runs.push([etcd, consul]);
    }
  });
  const figures: Figure[] = [];
  for (const [i, registry] of ['etcd', 'Consul'].entries()) {
    const of = (pick: (r: PropagationRun) => number): number[] => runs.map((perRegistry) => pick(perRegistry[i]!));
    figures.push(
      {
        case: registry,
        name: 'change → client cache, p99',
        unit: 'ms',
        runs: of((r) => r.clientP99Ms),
        limit: { name: 'change → bare watch, p99, same run', unit: 'ms', runs: of((r) => r.rawP99Ms) },
      },
      { case: registry, name: 'change → client cache, p50', unit: 'ms', runs: of((r) => r.clientP50Ms) },
      {
        case: registry,
        name: 'client cache beyond the bare watch, p99 per change',
        unit: 'ms',
        runs: of((r) => r.addedP99Ms),
        goal: { kind: 'below', threshold: GOAL_MS, text: `< ${GOAL_MS} ms` },
      },
      {
        case: registry,
        name: 'changes never seen by both within 10 s',
        unit: '',
        runs: of((r) => r.missed),
        goal: { kind: 'zero', threshold: 0, text: '0' },
      },
    );
  }
  return {
    id: 'client-propagation',
    title: '9. Client: registry change → watch cache',
    setup: [
      `etcd: ${etcdChanges} changes (put, then delete, of one json entry) about 20 ms apart; the bare watcher is an etcd3 prefix watch in the same process.`,
      `Consul: ${consulChanges} changes (register, then deregister, through the package's registrar) about 400 ms apart; the bare watcher is a blocking-query loop on the same ?passing=true endpoint.`,
      'Each change is timed from just before the write to the first notice of the bare watcher and of the client’s cache listener.',
    ],
    figures,
    notes: [],
    details: runs,
  };
}
