/**
 * Two clusters, one registry: the shared bed's apiserver is cluster A, a bed of this file's own is
 * cluster B, and one operator per cluster (each with its own cluster id) writes to the shared bed's
 * etcd and Consul, the same namespace and service names on both sides.
 *
 * What a user relies on: neither operator modifies or deletes an entry of the other, on create,
 * on delete, on resync, or when one of them dies (its entries expire, the other's stay); where
 * both want the same endpoint of the same service, the first keeps it (in Consul too, although
 * service ids would differ) and the second says so in status, and takes it over once it is free.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { Etcd3, type IKeyValue } from 'etcd3';
import { startBed, type Bed } from '../../testbed/bed.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import {
  agentServices,
  converge,
  countServiceInstances,
  crashLines,
  etcdKeys,
  FaultTally,
  operatorAlive,
  passingInstances,
  startOperatorOn,
  waitFor,
  waitForResyncs,
  type FaultOperator,
} from '../support/faults.ts';
import {
  createNamespace,
  createRegistry,
  createServiceInstance,
  deleteServiceInstance,
  getServiceInstance,
  installCrds,
} from '../support/kube.ts';

const sfx = uniqueSuffix();
const ns = `shop-${sfx}`;
const prefix = `/twins-${sfx}`;
const ids = { a: `cluster-a-${sfx}`, b: `cluster-b-${sfx}` } as const;
type Side = keyof typeof ids;
const TTL = 10;
const SETTLE_MS = 60_000;

const tally = new FaultTally('faults-two-clusters');
let bedB: Bed | undefined;
const kcs: Partial<Record<Side, KubeConfig>> = {};
const operators: Partial<Record<Side, FaultOperator>> = {};
let etcd: Etcd3;
let watcher: { cancel(): Promise<void> } | undefined;

/** One write seen in etcd: which key, whose it was before, whose after (undefined: gone). */
interface Touch {
  readonly key: string;
  readonly before: string | undefined;
  readonly after: string | undefined;
}
const touches: Touch[] = [];

function clusterOf(kv: IKeyValue | undefined): string | undefined {
  if (!kv || kv.value.length === 0) return undefined;
  try {
    return (JSON.parse(kv.value.toString()) as { owner?: { clusterId?: string } }).owner?.clusterId;
  } catch {
    return undefined;
  }
}

/** `address:port → cluster id` of the entries of one service. */
async function owners(service: string): Promise<Record<string, string>> {
  const dir = `${prefix}/${ns}/${service}/`;
  return Object.fromEntries(
    (await etcdKeys(etcd, dir)).map((kv) => [
      kv.key.slice(dir.length),
      (JSON.parse(kv.value) as { owner: { clusterId: string } }).owner.clusterId,
    ]),
  );
}

/** Consul `service id → ModifyIndex` of one side's services. */
async function consulIndexes(side: Side): Promise<Map<string, number>> {
  const res = await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/catalog/services`, { signal: AbortSignal.timeout(20_000) });
  const names = Object.keys((await res.json()) as Record<string, unknown>).filter((n) => n.startsWith(`${ns}-`));
  const out = new Map<string, number>();
  for (const name of names) {
    const list = (await (
      await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/catalog/service/${name}`, { signal: AbortSignal.timeout(20_000) })
    ).json()) as { ServiceID: string; ServiceMeta: Record<string, string>; ModifyIndex: number }[];
    for (const s of list) if (s.ServiceMeta['kr-owner-cluster'] === ids[side]) out.set(s.ServiceID, s.ModifyIndex);
  }
  return out;
}

/** `address:port → cluster id` of the Consul instances of a service. */
async function consulOwners(name: string): Promise<Record<string, string>> {
  const list = (await (
    await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/catalog/service/${name}`, { signal: AbortSignal.timeout(20_000) })
  ).json()) as { ServiceID: string; ServiceMeta: Record<string, string> }[];
  return Object.fromEntries(list.map((s) => [s.ServiceID, s.ServiceMeta['kr-owner-cluster'] ?? '']));
}

/** Writes in etcd since `from` that changed or removed an entry of `victim`, made while only `actor` may act. */
function touchesOf(victim: Side, from: number): Touch[] {
  return touches.slice(from).filter((t) => t.before === ids[victim] && t.after !== ids[victim]);
}

describe('two clusters, one registry', () => {
  before(async () => {
    kcs.a = adminKubeConfig();
    bedB = await startBed({ log: () => undefined });
    kcs.b = new KubeConfig();
    kcs.b.loadFromFile(bedB.kubeconfig);
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    const w = await etcd.watch().prefix(`${prefix}/${ns}/`).withPreviousKV().create();
    watcher = w;
    w.on('put', (kv, prev) => touches.push({ key: kv.key.toString(), before: clusterOf(prev), after: clusterOf(kv) }));
    w.on('delete', (kv, prev) => touches.push({ key: kv.key.toString(), before: clusterOf(prev), after: undefined }));
    for (const side of ['a', 'b'] as const) {
      const kc = kcs[side];
      assert.ok(kc);
      await installCrds(kc);
      await createNamespace(kc, ns, { twin: sfx });
      await createRegistry(kc, `twin-etcd-${sfx}`, {
        type: 'etcd',
        default: true,
        namespaceSelector: { matchLabels: { twin: sfx } },
        leaseTTLSeconds: TTL,
        etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
      });
      await createRegistry(kc, `twin-consul-${sfx}`, {
        type: 'consul',
        default: true,
        namespaceSelector: { matchLabels: { twin: sfx } },
        leaseTTLSeconds: TTL,
        consul: { address: bedEnv('CONSUL_HTTP_ADDR'), serviceName: '{namespace}-{service}' },
      });
    }
    operators.a = await startOperatorOn({
      kubeconfig: bedEnv('KUBECONFIG'),
      flags: [`--cluster-id=${ids.a}`, `--watch-namespaces=${ns}`, '--resync-period=2'],
      metrics: true,
    });
    operators.b = await startOperatorOn({
      kubeconfig: bedB.kubeconfig,
      flags: [`--cluster-id=${ids.b}`, `--watch-namespaces=${ns}`, '--resync-period=2'],
      metrics: true,
    });
  });

  after(async () => {
    console.log(tally.line());
    await operators.a?.process.stop();
    await operators.b?.process.stop();
    // An open watch stream would keep the process alive after the client is closed.
    await watcher?.cancel();
    etcd?.close();
    await bedB?.stop();
  });

  test("on create, each writes its own entries and leaves the other's alone; where both want one key, the first keeps it and the second says so", async () => {
    const { a: kcA, b: kcB } = kcs;
    assert.ok(kcA && kcB);
    await createServiceInstance(kcA, ns, 'cart', {
      service: 'cart',
      endpoints: [
        { address: '10.90.0.1', port: 80 },
        { address: '10.90.0.2', port: 80 },
      ],
    });
    await createServiceInstance(kcA, ns, 'keep', { service: 'keep', endpoints: [{ address: '10.90.2.1', port: 80 }] });
    await converge(
      tally,
      "cluster A's entries",
      async () => Object.entries(await owners('cart')).map(([k, o]) => `${k}=${o}`),
      [`10.90.0.1:80=${ids.a}`, `10.90.0.2:80=${ids.a}`],
      SETTLE_MS,
    );
    const mark = touches.length;
    const consulA = await consulIndexes('a');

    await createServiceInstance(kcB, ns, 'cart', {
      service: 'cart',
      endpoints: [
        { address: '10.90.1.1', port: 80 },
        { address: '10.90.0.2', port: 80 },
      ],
    });
    await createServiceInstance(kcB, ns, 'pay', { service: 'pay', endpoints: [{ address: '10.90.3.1', port: 80 }] });
    await converge(
      tally,
      "cluster B's entries beside A's",
      async () => Object.entries(await owners('cart')).map(([k, o]) => `${k}=${o}`),
      [`10.90.0.1:80=${ids.a}`, `10.90.0.2:80=${ids.a}`, `10.90.1.1:80=${ids.b}`],
      SETTLE_MS,
    );
    const conflict = await waitFor(
      "B's status to report the collision",
      async () => {
        const c = (await getServiceInstance(kcB, ns, 'cart'))?.status?.conditions?.find((x) => x.type === 'Registered');
        return c?.reason === 'OwnershipConflict' ? c : undefined;
      },
      SETTLE_MS,
    );
    assert.match(conflict.message, new RegExp(`10\\.90\\.0\\.2:80.*belongs to cluster "${ids.a}"`));
    // Consul would give B's 10.90.0.2 another service id, yet the owner rules are the same: A keeps it.
    await converge(
      tally,
      "Consul to pass A's instances and B's other one",
      () => passingInstances(bedEnv('CONSUL_HTTP_ADDR'), `${ns}-cart`),
      ['10.90.0.1:80', '10.90.0.2:80', '10.90.1.1:80'],
      SETTLE_MS,
    );
    assert.deepEqual(Object.values(await consulOwners(`${ns}-cart`)).sort(), [ids.a, ids.a, ids.b]);
    assert.deepEqual(touchesOf('a', mark), [], "B changed none of A's etcd entries");
    assert.deepEqual(await consulIndexes('a'), consulA, "B changed none of A's Consul services");
  });

  test('on resync, neither rewrites anything of the other (nor of its own)', async () => {
    const mark = touches.length;
    const consul = { a: await consulIndexes('a'), b: await consulIndexes('b') };
    // Three resyncs of every ServiceInstance by each operator.
    await Promise.all(
      (['a', 'b'] as const).map(async (side) => {
        const op = operators[side];
        const kc = kcs[side];
        assert.ok(op?.metricsUrl && kc);
        await waitForResyncs(op.metricsUrl, await countServiceInstances(kc, [ns]), 3, SETTLE_MS);
      }),
    );
    assert.deepEqual(touches.slice(mark), [], 'no etcd write at all');
    assert.deepEqual(await consulIndexes('a'), consul.a);
    assert.deepEqual(await consulIndexes('b'), consul.b);
    tally.checked(consul.a.size + consul.b.size);
  });

  test('on delete, each removes only its own entries, and the key A gave up goes to B', async () => {
    const { a: kcA, b: kcB } = kcs;
    assert.ok(kcA && kcB);
    const mark = touches.length;
    const consulB = await consulIndexes('b');
    await deleteServiceInstance(kcA, ns, 'cart');
    await waitFor("A's cart to go", async () => ((await getServiceInstance(kcA, ns, 'cart')) === undefined ? true : undefined), SETTLE_MS);
    // A's entries went; B keeps its own and, on its next resync, registers the key that is free now.
    await converge(
      tally,
      "B's entries once A's are gone",
      async () => Object.entries(await owners('cart')).map(([k, o]) => `${k}=${o}`),
      [`10.90.0.2:80=${ids.b}`, `10.90.1.1:80=${ids.b}`],
      SETTLE_MS,
    );
    assert.deepEqual(touchesOf('b', mark), [], "A removed none of B's etcd entries");
    const deletedByA = touches.slice(mark).filter((t) => t.after === undefined);
    assert.ok(
      deletedByA.every((t) => t.before === ids.a),
      `only A's entries were deleted: ${JSON.stringify(deletedByA)}`,
    );
    await converge(
      tally,
      "Consul to pass B's instances only, 10.90.0.2 taken over",
      () => passingInstances(bedEnv('CONSUL_HTTP_ADDR'), `${ns}-cart`),
      ['10.90.0.2:80', '10.90.1.1:80'],
      SETTLE_MS,
    );
    const afterB = await consulIndexes('b');
    assert.deepEqual(
      [...consulB].filter(([id, index]) => afterB.get(id) !== index),
      [],
      "A changed none of B's Consul services",
    );
    assert.deepEqual(Object.values(await consulOwners(`${ns}-cart`)).sort(), [ids.b, ids.b]);
    assert.equal(
      (await agentServices(bedEnv('CONSUL_HTTP_ADDR'), undefined, `Service == "${ns}-cart" and Meta["kr-owner-cluster"] == "${ids.a}"`))
        .length,
      0,
    );
  });

  test("when one operator dies its entries expire and the other's stay", async () => {
    const opB = operators.b;
    const opA = operators.a;
    assert.ok(opA && opB);
    const mark = touches.length;
    await opB.process.kill();
    tally.fault();
    await converge(
      tally,
      "B's etcd entries to expire, A's to stay",
      async () =>
        [...Object.entries(await owners('cart')), ...Object.entries(await owners('pay')), ...Object.entries(await owners('keep'))].map(
          ([k, o]) => `${k}=${o}`,
        ),
      [`10.90.2.1:80=${ids.a}`],
      (TTL + 15) * 1000,
    );
    await converge(
      tally,
      "B's Consul instances to leave the passing results",
      () => passingInstances(bedEnv('CONSUL_HTTP_ADDR'), `${ns}-cart`),
      [],
      (TTL + 15) * 1000,
    );
    await converge(
      tally,
      "A's Consul instance to stay passing",
      () => passingInstances(bedEnv('CONSUL_HTTP_ADDR'), `${ns}-keep`),
      ['10.90.2.1:80'],
      SETTLE_MS,
    );
    assert.deepEqual(touchesOf('a', mark), [], "nothing of A's changed while B died");
    assert.ok(await operatorAlive(opA));
    assert.deepEqual(crashLines(await opA.log()), []);
    assert.deepEqual(crashLines(await opB.log()), []);
  });
});
