/**
 * Failover without flapping: two operator processes elect a leader on a Lease; the leader is
 * killed with SIGKILL; the standby takes over, adopts the registry lease and deletes nothing.
 *
 * No two leaders write: a leader cut off from the apiserver by a network partition (its link
 * black-holed, so requests hang rather than fail) stops writing before the standby takes the
 * Lease, although its stale caches would have it undo what the new leader writes.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { kubeconfigVia, TcpProxy } from '../support/faults.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds, patchServiceInstance } from '../support/kube.ts';
import { isLeader, leaderAndStandby, startOperator, type OperatorProcess } from '../support/operator.ts';

const LEASE_DURATION = 4;

/**
 * Registry change batches the operator applied successfully (a refused or failed one wrote
 * nothing), or undefined when its metrics do not answer (it exited).
 */
async function registryWrites(op: OperatorProcess): Promise<number | undefined> {
  let text: string;
  try {
    text = await (await fetch(op.metricsUrl, { signal: AbortSignal.timeout(1000) })).text();
  } catch {
    return undefined;
  }
  let sum = 0;
  for (const m of text.matchAll(/^kube_registrar_registry_operations_total\{([^}]*)\} (\S+)$/gm)) {
    if (m[1]?.includes('operation="apply"') && m[1].includes('outcome="success"')) sum += Number(m[2]);
  }
  return sum;
}

/** A namespace whose ServiceInstance `api` lists `addresses` (port 80), and an etcd Registry under `prefix` admitting only it. */
async function setUp(kc: KubeConfig, ns: string, registry: string, prefix: string, addresses: readonly string[]): Promise<void> {
  await installCrds(kc);
  await createNamespace(kc, ns, { team: ns });
  await createRegistry(kc, registry, {
    type: 'etcd',
    default: true,
    namespaceSelector: { matchLabels: { team: ns } },
    leaseTTLSeconds: 20,
    etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
  });
  await createServiceInstance(kc, ns, 'api', { service: 'api', endpoints: addresses.map((address) => ({ address, port: 80 })) });
}

const operators: OperatorProcess[] = [];
const proxies: TcpProxy[] = [];
after(async () => {
  for (const op of operators) await op.process.stop();
  for (const p of proxies) await p.close();
});

test('killing the leader hands over to the standby within the lease duration, and not one entry is deleted or rewritten', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `le-${sfx}`;
  const prefix = `/leader-${sfx}`;
  await setUp(kc, ns, `le-${sfx}`, prefix, ['192.0.2.70', '192.0.2.71']);

  // Each test's operators watch only its namespace, so that they leave the other test's alone.
  const flags = [
    '--leader-elect=true',
    `--leader-election-namespace=${ns}`,
    `--watch-namespaces=${ns}`,
    `--lease-duration=${LEASE_DURATION}`,
    '--renew-deadline=3',
    '--retry-period=1',
    '--resync-period=2',
  ];
  operators.push(await startOperator(flags), await startOperator(flags));
  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  try {
    const dir = `${prefix}/${ns}/api/`;
    await eventually('entries written by the leader', async () =>
      Object.keys(await etcd.getAll().prefix(dir).strings()).length === 2 ? true : undefined,
    );
    const { leader, standby } = await leaderAndStandby(operators);
    // The standby has warm caches and answers ready too.
    assert.equal((await fetch(`${standby.healthUrl}/readyz`)).status, 200);

    const deletes: string[] = [];
    const puts: string[] = [];
    const watcher = await etcd.watch().prefix(prefix).create();
    watcher.on('delete', (kv) => deletes.push(kv.key.toString()));
    watcher.on('put', (kv) => puts.push(kv.key.toString()));
    try {
      await leader.process.kill();
      const killedAt = Date.now();
      await eventually(
        'the standby to take over',
        async () => ((await isLeader(standby)) ? true : undefined),
        (LEASE_DURATION + 10) * 1000,
      );
      const takeoverMs = Date.now() - killedAt;
      // Within the lease duration plus a few retry periods.
      assert.ok(takeoverMs < (LEASE_DURATION + 5) * 1000, `takeover took ${takeoverMs} ms`);
      t.diagnostic(`takeover after SIGKILL of the leader: ${takeoverMs} ms (lease duration ${LEASE_DURATION} s)`);

      // Several resyncs under the new leader.
      await sleep(5000);
      assert.deepEqual(deletes, [], 'no entry was deleted during the failover');
      assert.deepEqual(
        puts.filter((k) => !k.includes('/_kube-registrar/')),
        [],
        'no entry was rewritten: the new leader adopted the lease',
      );

      await patchServiceInstance(kc, ns, 'api', {
        endpoints: [
          { address: '192.0.2.70', port: 80 },
          { address: '192.0.2.71', port: 80 },
          { address: '192.0.2.72', port: 80 },
        ],
      });
      await eventually('the new leader to reconcile a change', async () =>
        (await etcd.get(`${dir}192.0.2.72:80`).string()) ? true : undefined,
      );
    } finally {
      await watcher.cancel();
    }
  } finally {
    etcd.close();
  }
});

test('a leader whose apiserver link is black-holed stops writing before the standby takes over, and nothing it would write from its stale caches reaches etcd', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `le-cut-${sfx}`;
  const prefix = `/leader-cut-${sfx}`;
  const dir = `${prefix}/${ns}/api/`;
  await setUp(kc, ns, `le-cut-${sfx}`, prefix, ['192.0.2.80', '192.0.2.81']);

  // The leader reaches the apiserver only through the proxy; its registry (etcd) link stays up.
  const apiserver = kc.getCurrentCluster()?.server;
  assert.ok(apiserver, 'the bed kubeconfig names an apiserver');
  const proxy = await TcpProxy.start(apiserver);
  proxies.push(proxy);
  // Each test's operators watch only its namespace, so that they leave the other test's alone.
  const flags = [
    '--leader-elect=true',
    `--leader-election-namespace=${ns}`,
    `--watch-namespaces=${ns}`,
    `--lease-duration=${LEASE_DURATION}`,
    '--renew-deadline=3',
    '--retry-period=1',
    '--resync-period=2',
  ];
  const leader = await startOperator(flags, {}, await kubeconfigVia(bedEnv('KUBECONFIG'), proxy.url('https')));
  operators.push(leader);
  await eventually('the operator behind the proxy to lead', async () => ((await isLeader(leader)) ? true : undefined), 30_000);
  const standby = await startOperator(flags);
  operators.push(standby);

  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  try {
    const entries = async (): Promise<string[]> => Object.keys(await etcd.getAll().prefix(dir).strings()).sort();
    await eventually('entries written by the leader', async () => ((await entries()).length === 2 ? true : undefined));
    assert.equal(await isLeader(standby), false, 'the second operator stands by');
    const leaderWritesBefore = await registryWrites(leader);
    const standbyWritesBefore = (await registryWrites(standby)) ?? 0;
    assert.ok(
      leaderWritesBefore !== undefined && leaderWritesBefore >= 1,
      `the leader's write counter counts its writes (${String(leaderWritesBefore)})`,
    );

    const events: { type: 'put' | 'delete'; key: string; ms: number }[] = [];
    const watcher = await etcd.watch().prefix(prefix).create();
    let cutAt = Date.now();
    watcher.on('put', (kv) => events.push({ type: 'put', key: kv.key.toString(), ms: Date.now() - cutAt }));
    watcher.on('delete', (kv) => events.push({ type: 'delete', key: kv.key.toString(), ms: Date.now() - cutAt }));
    try {
      proxy.cut('blackhole');
      cutAt = Date.now();
      // Only the standby sees this change; the cut-off leader's caches keep .81 and not .82, so
      // were it still acting it would put .81 back and delete .82 at its next resync.
      await patchServiceInstance(kc, ns, 'api', {
        endpoints: [
          { address: '192.0.2.80', port: 80 },
          { address: '192.0.2.82', port: 80 },
        ],
      });

      let oldStoppedMs: number | undefined;
      const takeoverMs = await eventually(
        'the standby to take over',
        async () => {
          if (oldStoppedMs === undefined && !(await isLeader(leader))) oldStoppedMs = Date.now() - cutAt;
          return (await isLeader(standby)) ? Date.now() - cutAt : undefined;
        },
        (LEASE_DURATION + 60) * 1000,
      );
      const oldStillLeading = await isLeader(leader);
      const leaderWritesAtTakeover = await registryWrites(leader);
      const oldStopped =
        oldStoppedMs === undefined
          ? 'was still leading when the standby took over'
          : `stopped reporting leadership ${oldStoppedMs} ms after the cut`;
      t.diagnostic(
        `black-holed leader ${oldStopped}; the standby led ${takeoverMs} ms after the cut (lease duration ${LEASE_DURATION} s, renew deadline 3 s)`,
      );

      // First what the test waits for: the new leader wrote the change, and counted it.
      const want = [`${dir}192.0.2.80:80`, `${dir}192.0.2.82:80`];
      await eventually(
        'the new leader to write the change',
        async () => (JSON.stringify(await entries()) === JSON.stringify(want) ? true : undefined),
        30_000,
      );
      const standbyWrites = await eventually('the new leader to count its write', async () => {
        const n = await registryWrites(standby);
        return n !== undefined && n > standbyWritesBefore ? n : undefined;
      });
      // Several resyncs of the old leader, had it still been acting on its stale caches (the old
      // elector kept it leading until its hung renewal hit the 30 s request deadline; its first
      // stale write came about 12 s after the cut, once a status patch of its gave up).
      await sleep(15_000);
      const leaderWritesAfter = await registryWrites(leader);
      t.diagnostic(
        `registry writes: old leader ${leaderWritesBefore} before the cut, ${String(leaderWritesAtTakeover)} at takeover, ${String(leaderWritesAfter)} 15 s after the new leader wrote (undefined: exited); new leader ${standbyWritesBefore} → ${standbyWrites}`,
      );

      const writes = events.filter((e) => !e.key.includes('/_kube-registrar/'));
      assert.deepEqual(
        writes.map((e) => `${e.type} ${e.key}`).sort(),
        [`put ${dir}192.0.2.82:80`, `delete ${dir}192.0.2.81:80`].sort(),
        `only the new leader's change reached etcd after the cut (the standby led ${takeoverMs} ms after it): ${JSON.stringify(writes)}`,
      );
      assert.deepEqual(await entries(), want, 'etcd holds what the new leader wrote');
      for (const n of [leaderWritesAtTakeover, leaderWritesAfter]) {
        if (n !== undefined) assert.equal(n, leaderWritesBefore, 'the old leader wrote nothing to the registry after the cut');
      }
      assert.equal(oldStillLeading, false, 'the old leader had stopped leading by the time the standby led');
    } finally {
      await watcher.cancel();
    }
  } finally {
    etcd.close();
  }
});
