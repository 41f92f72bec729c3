/**
 * What the operator writes for `format: grpc`, read by a real Go gRPC client: grpc-go 1.67 with
 * etcd's naming resolver (client v3.5.21), built from tools/grpc-resolver-probe by the bed's
 * provisioning. The client dials the target the README documents, `etcd:///<prefix>/<namespace>/<service>`
 * for a prefix without a leading '/', and calls the standard health service of gRPC servers that
 * this test runs on loopback, registered as static endpoints of a ServiceInstance.
 *
 * Two clients run side by side: one with pick_first, grpc-go's default, whose address comparison
 * panics on a JSON object in Metadata once an entry is rewritten (grpc/grpc-go#8225), and one with
 * round_robin, which shows every registered server being reached.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { ManagedProcess } from '../../testbed/processes.ts';
import { EtcdKeyLayout } from '../../src/registry/etcd/keys.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { GrpcHealthServer } from '../support/health-servers.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds, patchServiceInstance } from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = uniqueSuffix();
const ns = `grpc-go-${sfx}`;
const registryName = `grpc-go-${sfx}`;
// No leading '/': etcd's resolver drops the one of the dial target, so this is what Go users need.
const prefix = `grpc-go-${sfx}`;
const service = 'greeter';
const POLICIES = ['pick_first', 'round_robin'] as const;
type Policy = (typeof POLICIES)[number];
// Go's start, etcd's watch and a reconcile on a busy 2-core machine.
const DEADLINE_MS = 60_000;

/** One line the probe printed. */
interface ProbeEvent {
  readonly event: 'start' | 'resolved' | 'call' | 'stop';
  readonly time: string;
  readonly addresses?: readonly { readonly addr: string; readonly metadataType: string }[];
  readonly ok?: boolean;
  readonly peer?: string;
  readonly error?: string;
  readonly grpcVersion?: string;
}

/** A running grpc-resolver-probe and what it printed so far. */
class GoClient {
  readonly policy: Policy;
  readonly process: ManagedProcess;

  constructor(policy: Policy, process: ManagedProcess) {
    this.policy = policy;
    this.process = process;
  }

  static async start(policy: Policy, target: string): Promise<GoClient> {
    const logDir = await mkdtemp(join(tmpdir(), 'kube-registrar-grpc-go-'));
    const args = [`-etcd=${bedEnv('ETCD_ENDPOINTS')}`, `-target=${target}`, `-policy=${policy}`, '-interval=50ms', '-timeout=2s'];
    const proc = new ManagedProcess(`grpc-resolver-probe (${policy})`, bedEnv('GRPC_RESOLVER_PROBE'), args, join(logDir, `${policy}.log`));
    return new GoClient(policy, proc);
  }

  /** Every event printed so far, in order; the Go runtime's own output (a panic) is not JSON and is skipped. */
  async events(): Promise<ProbeEvent[]> {
    const text = await readFile(this.process.logFile, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as ProbeEvent);
  }

  /** Fails with the client's output when it is no longer running (a panic exits with code 2). */
  async assertAlive(): Promise<void> {
    const log = await this.process.logTail(40);
    assert.doesNotMatch(log, /panic:/, `the ${this.policy} Go client panicked; its output:\n${log}`);
    assert.ok(this.process.running, `the ${this.policy} Go client exited; its output:\n${log}`);
  }

  /**
   * Waits until the client has printed a resolver update after event number `from` that matches
   * `wanted`, and then `calls` successful calls; resolves the calls made after that update. Fails
   * at once if the client dies meanwhile.
   */
  async callsAfterResolution(from: number, wanted: (addrs: readonly string[]) => boolean, calls: number): Promise<ProbeEvent[]> {
    const deadline = Date.now() + DEADLINE_MS;
    for (;;) {
      await this.assertAlive();
      const events = (await this.events()).slice(from);
      const i = events.findLastIndex((e) => e.event === 'resolved' && wanted((e.addresses ?? []).map((a) => a.addr)));
      const after = i < 0 ? [] : events.slice(i + 1).filter((e) => e.event === 'call');
      if (i >= 0 && after.filter((e) => e.ok === true).length >= calls) return after;
      if (Date.now() > deadline) {
        assert.fail(
          `the ${this.policy} Go client did not resolve the expected addresses and then make ${calls} calls within ${DEADLINE_MS} ms; ` +
            `its output:\n${await this.process.logTail(40)}`,
        );
      }
      await sleep(100);
    }
  }
}

let kc: KubeConfig;
let etcd: Etcd3;
let operator: OperatorProcess | undefined;
let servers: GrpcHealthServer[] = [];
const clients: GoClient[] = [];

function endpoint(server: GrpcHealthServer, weight = 1): { address: string; port: number; weight: number } {
  return { address: '127.0.0.1', port: server.port, weight };
}

function addr(server: GrpcHealthServer): string {
  return `127.0.0.1:${server.port}`;
}

async function keysUnder(path: string): Promise<Record<string, string>> {
  return etcd.getAll().prefix(path).strings();
}

/** The mod revision of every key under `path`. */
async function modRevisions(path: string): Promise<Record<string, string>> {
  const res = await etcd.getAll().prefix(path).exec();
  return Object.fromEntries(res.kvs.map((kv) => [kv.key.toString(), kv.mod_revision]));
}

describe('a Go gRPC client resolving through etcd', () => {
  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    servers = await Promise.all([GrpcHealthServer.start(), GrpcHealthServer.start()]);
    await installCrds(kc);
    await createNamespace(kc, ns, { env: ns });
    await createRegistry(kc, registryName, {
      type: 'etcd',
      namespaceSelector: { matchLabels: { env: ns } },
      namespace: '{namespace}',
      leaseTTLSeconds: 10,
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix, format: 'grpc' },
    });
    operator = await startOperator(['--resync-period=3']);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.process.stop()));
    await operator?.process.stop();
    for (const s of servers) s.close();
    etcd.close();
  });

  test('dials etcd:///<prefix>/<namespace>/<service>, reaches every server, survives a rewrite and stops using a removed endpoint', async () => {
    const [a, b] = servers as [GrpcHealthServer, GrpcHealthServer];
    await createServiceInstance(kc, ns, service, {
      service,
      registries: [registryName],
      endpoints: [endpoint(a), endpoint(b)],
      tags: { version: '1' },
    });
    const dir = `${prefix}/${ns}/${service}/`;
    const written = await eventually(
      'both endpoints to be written',
      async () => {
        const kvs = await keysUnder(dir);
        return Object.keys(kvs).length === 2 ? kvs : undefined;
      },
      DEADLINE_MS,
    );
    assert.deepEqual(written, {
      [`${dir}${addr(a)}`]: JSON.stringify({ Op: 0, Addr: addr(a) }),
      [`${dir}${addr(b)}`]: JSON.stringify({ Op: 0, Addr: addr(b) }),
    });

    const target = `etcd:///${prefix}/${ns}/${service}`;
    assert.equal(new EtcdKeyLayout(prefix).grpcTarget(ns, service), target, 'the target the README documents');
    for (const policy of POLICIES) clients.push(await GoClient.start(policy, target));
    const [pickFirst, roundRobin] = clients as [GoClient, GoClient];

    // Both clients resolve both servers, with no Metadata for grpc-go to compare.
    const both = (addrs: readonly string[]) => addrs.length === 2 && addrs.includes(addr(a)) && addrs.includes(addr(b));
    for (const client of clients) await client.callsAfterResolution(0, both, 10);
    const firstResolved = (await pickFirst.events()).find((e) => e.event === 'resolved');
    assert.deepEqual(
      firstResolved?.addresses?.map((x) => x.metadataType),
      ['<nil>', '<nil>'],
    );
    assert.equal((await pickFirst.events()).find((e) => e.event === 'start')?.grpcVersion, '1.67.3');
    // round_robin spreads calls over both; each server answered.
    const spread = await eventually(
      'round_robin to have called both servers',
      async () => {
        const peers = new Set((await roundRobin.events()).filter((e) => e.ok === true).map((e) => e.peer));
        return peers.has(addr(a)) && peers.has(addr(b)) ? peers : undefined;
      },
      DEADLINE_MS,
    );
    assert.equal(spread.size, 2);
    assert.ok(a.calls > 0 && b.calls > 0, `both servers answered (${a.calls}, ${b.calls})`);

    // Rewrite both entries while the clients are connected: new weight and tags. etcd delivers a
    // put for each key, the resolver hands grpc-go the addresses again, and pick_first compares
    // them with those it holds: the step that panicked while the value carried a JSON object.
    const marks = await Promise.all(clients.map(async (c) => (await c.events()).length));
    const revisionsBefore = await modRevisions(dir);
    await patchServiceInstance(kc, ns, service, { endpoints: [endpoint(a, 5), endpoint(b, 7)], tags: { version: '2' } });
    await eventually(
      'both entries to be rewritten',
      async () => {
        const now = await modRevisions(dir);
        return Object.keys(revisionsBefore).every((k) => BigInt(now[k] ?? '0') > BigInt(revisionsBefore[k] ?? '0')) ? true : undefined;
      },
      DEADLINE_MS,
    );
    for (const [i, client] of clients.entries()) {
      const afterRewrite = await client.callsAfterResolution(marks[i] ?? 0, both, 20);
      assert.ok(
        afterRewrite.every((e) => e.ok === true),
        `the ${client.policy} client kept calling through the rewrite: ${JSON.stringify(afterRewrite.filter((e) => e.ok !== true))}`,
      );
      await client.assertAlive();
    }
    // The values stayed {"Op":0,"Addr"}; what changed is in the owner index.
    assert.deepEqual(await keysUnder(dir), written);
    const index = await keysUnder(`${prefix}/_kube-registrar/owners/${ns}/${service}/`);
    assert.deepEqual(
      Object.values(index)
        .map((v) => JSON.parse(v) as { weight: number; tags: Record<string, string> })
        .map(({ weight, tags }) => ({ weight, tags }))
        .sort((x, y) => x.weight - y.weight),
      [
        { weight: 5, tags: { version: '2' } },
        { weight: 7, tags: { version: '2' } },
      ],
    );

    // Remove b: both clients stop using it.
    const marksBeforeRemoval = await Promise.all(clients.map(async (c) => (await c.events()).length));
    await patchServiceInstance(kc, ns, service, { endpoints: [endpoint(a, 5)] });
    await eventually(
      'the removed endpoint to leave etcd',
      async () => (Object.keys(await keysUnder(dir)).join() === `${dir}${addr(a)}` ? true : undefined),
      DEADLINE_MS,
    );
    for (const [i, client] of clients.entries()) {
      const onlyA = (addrs: readonly string[]) => addrs.length === 1 && addrs[0] === addr(a);
      const afterRemoval = await client.callsAfterResolution(marksBeforeRemoval[i] ?? 0, onlyA, 20);
      // A call already under way when b went may still end there; from the first one on a, none goes to b.
      const fromA = afterRemoval.slice(afterRemoval.findIndex((e) => e.ok === true && e.peer === addr(a)));
      assert.deepEqual(
        fromA.filter((e) => e.ok === true && e.peer !== addr(a)),
        [],
        `the ${client.policy} client calls only ${addr(a)} once ${addr(b)} is removed`,
      );
      await client.assertAlive();
    }
  });
});
