/**
 * Failover without flapping: two operator processes elect a leader on a Lease; the leader is
 * killed with SIGKILL; the standby takes over, adopts the registry lease and deletes nothing.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds, patchServiceInstance } from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const LEASE_DURATION = 4;

async function isLeader(op: OperatorProcess): Promise<boolean> {
  try {
    const text = await (await fetch(op.metricsUrl, { signal: AbortSignal.timeout(1000) })).text();
    return /^kube_registrar_leader 1$/m.test(text);
  } catch {
    return false;
  }
}

const operators: OperatorProcess[] = [];
after(async () => {
  for (const op of operators) await op.process.stop();
});

test('killing the leader hands over to the standby within the lease duration, and not one entry is deleted or rewritten', async (t) => {
  const kc = adminKubeConfig();
  const sfx = uniqueSuffix();
  const ns = `le-${sfx}`;
  const prefix = `/leader-${sfx}`;
  await installCrds(kc);
  await createNamespace(kc, ns, { team: ns });
  await createRegistry(kc, `le-${sfx}`, { type: 'etcd', default: true, namespaceSelector: { matchLabels: { team: ns } }, leaseTTLSeconds: 20, etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix } });
  await createServiceInstance(kc, ns, 'api', { service: 'api', endpoints: [{ address: '192.0.2.70', port: 80 }, { address: '192.0.2.71', port: 80 }] });

  const flags = ['--leader-elect=true', `--leader-election-namespace=${ns}`, `--lease-duration=${LEASE_DURATION}`, '--renew-deadline=3', '--retry-period=1', '--resync-period=2'];
  operators.push(await startOperator(flags), await startOperator(flags));
  const etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
  try {
    const dir = `${prefix}/${ns}/api/`;
    await eventually('entries written by the leader', async () => (Object.keys(await etcd.getAll().prefix(dir).strings()).length === 2 ? true : undefined));
    const leaders = await eventually('exactly one leader', async () => {
      const flags = await Promise.all(operators.map(isLeader));
      return flags.filter(Boolean).length === 1 ? flags : undefined;
    });
    const leader = operators[leaders.indexOf(true)];
    const standby = operators[leaders.indexOf(false)];
    assert.ok(leader && standby);
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
      await eventually('the standby to take over', async () => ((await isLeader(standby)) ? true : undefined), (LEASE_DURATION + 10) * 1000);
      const takeoverMs = Date.now() - killedAt;
      // Within the lease duration plus a few retry periods.
      assert.ok(takeoverMs < (LEASE_DURATION + 5) * 1000, `takeover took ${takeoverMs} ms`);
      t.diagnostic(`takeover after SIGKILL of the leader: ${takeoverMs} ms (lease duration ${LEASE_DURATION} s)`);

      // Several resyncs under the new leader.
      await sleep(5000);
      assert.deepEqual(deletes, [], 'no entry was deleted during the failover');
      assert.deepEqual(puts.filter((k) => !k.includes('/_kube-registrar/')), [], 'no entry was rewritten: the new leader adopted the lease');

      await patchServiceInstance(kc, ns, 'api', { endpoints: [{ address: '192.0.2.70', port: 80 }, { address: '192.0.2.71', port: 80 }, { address: '192.0.2.72', port: 80 }] });
      await eventually('the new leader to reconcile a change', async () => ((await etcd.get(`${dir}192.0.2.72:80`).string()) ? true : undefined));
    } finally {
      await watcher.cancel();
    }
  } finally {
    etcd.close();
  }
});
