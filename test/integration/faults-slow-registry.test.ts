/**
 * One slow registry must not hold up another. An operator serves a Consul Registry reached through
 * a proxy that can slow every exchange down, and an etcd Registry in another namespace. With the
 * Consul side slowed so that each of its reconciles takes many seconds, and more of them queued
 * than the operator runs at once (--concurrency=2), a change made afterwards on the etcd side must
 * still be written at once: before any of the Consul changes made earlier has landed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { etcdChildren, TcpProxy } from '../support/faults.ts';
import { createNamespace, createRegistry, createServiceInstance, eventually, installCrds, patchServiceInstance } from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = uniqueSuffix();
const slowNs = `slowreg-${sfx}`;
const fastNs = `fastreg-${sfx}`;
const prefix = `/slowreg-${sfx}`;
/** Each chunk through the proxy is held this long, both ways: no agent call answers sooner. */
const DELAY_MS = 4000;
const SLOW_SERVICES = ['a', 'b', 'c', 'd', 'e', 'f'];

let kc: KubeConfig;
let etcd: Etcd3 | undefined;
let proxy: TcpProxy | undefined;
let operator: OperatorProcess | undefined;

/** Addresses of the passing instances of a Consul service, straight from the agent (not through the proxy). */
async function passing(service: string): Promise<string[]> {
  const token = process.env['CONSUL_HTTP_TOKEN'];
  const res = await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/health/service/${slowNs}-${service}?passing=true`, {
    headers: token ? { 'X-Consul-Token': token } : {},
    signal: AbortSignal.timeout(3000),
  });
  const body = (await res.json()) as { Service: { Address: string } }[];
  return body.map((e) => e.Service.Address).sort();
}

describe('a slow registry', () => {
  before(async () => {
    kc = adminKubeConfig();
    etcd = new Etcd3({ hosts: bedEnv('ETCD_ENDPOINTS').split(',') });
    proxy = await TcpProxy.start(bedEnv('CONSUL_HTTP_ADDR'));
    await installCrds(kc);
    await createNamespace(kc, slowNs, { slowreg: `slow-${sfx}` });
    await createNamespace(kc, fastNs, { slowreg: `fast-${sfx}` });
    await createRegistry(kc, `consul-slow-${sfx}`, {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { slowreg: `slow-${sfx}` } },
      leaseTTLSeconds: 60,
      consul: { address: proxy.url('http'), serviceName: '{namespace}-{service}' },
    });
    await createRegistry(kc, `etcd-fast-${sfx}`, {
      type: 'etcd',
      default: true,
      namespaceSelector: { matchLabels: { slowreg: `fast-${sfx}` } },
      namespace: '{namespace}',
      leaseTTLSeconds: 60,
      etcd: { endpoints: [bedEnv('ETCD_ENDPOINTS')], prefix },
    });
    operator = await startOperator([
      `--cluster-id=slowreg-${sfx}`,
      `--watch-namespaces=${slowNs},${fastNs}`,
      '--concurrency=2',
      // Longer than a slowed agent call, so the slow side's reconciles wait rather than fail.
      '--registry-timeout=60',
    ]);
  });

  after(async () => {
    await operator?.process.stop();
    await proxy?.close();
    etcd?.close();
  });

  test("a registry slowed to seconds per call holds up none of another registry's writes", async () => {
    assert.ok(etcd && proxy);
    const db = etcd;
    for (const s of SLOW_SERVICES)
      await createServiceInstance(kc, slowNs, s, { service: s, endpoints: [{ address: '10.70.0.1', port: 80 }] });
    await createServiceInstance(kc, fastNs, 'web', { service: 'web', endpoints: [{ address: '10.71.0.1', port: 80 }] });
    for (const s of SLOW_SERVICES)
      await eventually(`${s} in Consul`, async () => ((await passing(s)).length === 1 ? true : undefined), 60_000);
    await eventually('web in etcd', async () => ((await etcdChildren(db, `${prefix}/${fastNs}/`)).length === 1 ? true : undefined), 60_000);

    // Slow the Consul side down, then give each of its services a second endpoint: six reconciles,
    // three times the operator's --concurrency, each waiting seconds on the agent.
    proxy.slow(DELAY_MS);
    for (const s of SLOW_SERVICES)
      await patchServiceInstance(kc, slowNs, s, {
        endpoints: [
          { address: '10.70.0.1', port: 80 },
          { address: '10.70.0.2', port: 80 },
        ],
      });
    // Only now the etcd side changes; it must land while the Consul side is still waiting.
    await patchServiceInstance(kc, fastNs, 'web', {
      endpoints: [
        { address: '10.71.0.1', port: 80 },
        { address: '10.71.0.2', port: 80 },
      ],
    });
    const fast = await eventually(
      'the second web endpoint in etcd',
      async () =>
        (await etcdChildren(db, `${prefix}/${fastNs}/`)).length === 2 ? await etcdChildren(db, `${prefix}/${fastNs}/`) : undefined,
      60_000,
    );
    assert.deepEqual(fast, ['web/10.71.0.1:80', 'web/10.71.0.2:80']);
    const slowSeen = await Promise.all(SLOW_SERVICES.map(async (s) => (await passing(s)).length));
    assert.deepEqual(
      slowSeen,
      SLOW_SERVICES.map(() => 1),
      'the etcd change, made after every Consul change, landed before any of them',
    );

    // The slow side was only slow: every change it was given lands once the proxy is fast again.
    proxy.slow(0);
    for (const s of SLOW_SERVICES)
      await eventually(`${s}'s second endpoint in Consul`, async () => ((await passing(s)).length === 2 ? true : undefined), 120_000);
  });
});
