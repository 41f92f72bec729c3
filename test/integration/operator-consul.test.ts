/**
 * The lifecycles of DESIGN §2 through the operator into the bed's real Consul agent, read back the
 * way consumers read it: GET /v1/health/service/<name>?passing=true.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { startAclConsulAgent, type AclConsulAgent } from '../support/consul-acl.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { countServiceInstances, waitForResyncs } from '../support/faults.ts';
import {
  createNamespace,
  createPod,
  createRegistry,
  createServiceInstance,
  deletePod,
  deleteServiceInstance,
  eventually,
  getServiceInstance,
  installCrds,
  patchServiceInstance,
  setPodReady,
} from '../support/kube.ts';
import { startOperator, type OperatorProcess } from '../support/operator.ts';

const sfx = uniqueSuffix();
const ns = `shop-${sfx}`;
// Long enough for a restart of the operator on a busy machine, short enough to watch expire.
const LEASE_TTL = 10;

interface Passing {
  id: string;
  address: string;
  port: number;
  weight: number;
  tags: string[];
}

function headers(token?: string): Record<string, string> {
  const t = token ?? process.env['CONSUL_HTTP_TOKEN'];
  return t ? { 'X-Consul-Token': t } : {};
}

async function passing(name: string, addr = bedEnv('CONSUL_HTTP_ADDR'), token?: string): Promise<Passing[]> {
  const res = await fetch(`${addr}/v1/health/service/${name}?passing=true`, { headers: headers(token), signal: AbortSignal.timeout(3000) });
  const body = (await res.json()) as {
    Service: { ID: string; Address: string; Port: number; Weights: { Passing: number }; Tags: string[] };
  }[];
  return body
    .map((e) => ({
      id: e.Service.ID,
      address: e.Service.Address,
      port: e.Service.Port,
      weight: e.Service.Weights.Passing,
      tags: [...e.Service.Tags].sort(),
    }))
    .sort((a, b) => a.address.localeCompare(b.address));
}

async function catalogIds(name: string): Promise<Map<string, number>> {
  const res = await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/catalog/service/${name}`, {
    headers: headers(),
    signal: AbortSignal.timeout(3000),
  });
  const body = (await res.json()) as { ServiceID: string; ModifyIndex: number }[];
  return new Map(body.map((s) => [s.ServiceID, s.ModifyIndex]));
}

let kc: KubeConfig;
let operator: OperatorProcess | undefined;
let aclAgent: AclConsulAgent | undefined;

describe('operator on Consul', () => {
  before(async () => {
    kc = adminKubeConfig();
    await installCrds(kc);
    await createNamespace(kc, ns, { shop: sfx });
    await createRegistry(kc, `consul-${sfx}`, {
      type: 'consul',
      default: true,
      namespaceSelector: { matchLabels: { shop: sfx } },
      leaseTTLSeconds: LEASE_TTL,
      consul: { address: bedEnv('CONSUL_HTTP_ADDR'), serviceName: '{namespace}-{service}' },
    });
    operator = await startOperator(['--resync-period=3']);
  });

  after(async () => {
    await operator?.process.stop();
    await aclAgent?.stop();
  });

  test('passing results hold exactly the Ready pods with their weights and tags, and follow readiness, updates and deletion', async () => {
    const name = `${ns}-cart`;
    await createServiceInstance(kc, ns, 'cart', {
      service: 'cart',
      selector: { matchLabels: { app: 'cart' } },
      port: 8080,
      weight: 4,
      tags: { version: '2', zone: 'a' },
    });
    for (const [i, ip] of ['10.2.0.1', '10.2.0.2', '10.2.0.3'].entries()) {
      await createPod(kc, ns, `cart-${i}`, { labels: { app: 'cart' } });
      await setPodReady(kc, ns, `cart-${i}`, ip, i < 2);
    }
    const first = await eventually('two passing instances', async () => {
      const p = await passing(name);
      return p.length === 2 ? p : undefined;
    });
    assert.deepEqual(
      first.map((p) => [p.address, p.port, p.weight, p.tags]),
      [
        ['10.2.0.1', 8080, 4, ['version=2', 'zone=a']],
        ['10.2.0.2', 8080, 4, ['version=2', 'zone=a']],
      ],
    );

    await setPodReady(kc, ns, 'cart-2', '10.2.0.3', true);
    await setPodReady(kc, ns, 'cart-0', '10.2.0.1', false);
    await eventually('readiness to be followed', async () => {
      const p = (await passing(name)).map((x) => x.address);
      return JSON.stringify(p) === JSON.stringify(['10.2.0.2', '10.2.0.3']) ? true : undefined;
    });

    await patchServiceInstance(kc, ns, 'cart', { weight: 9 });
    await eventually('the new weight', async () => ((await passing(name)).every((p) => p.weight === 9) ? true : undefined));

    await deletePod(kc, ns, 'cart-1', 0);
    await eventually('the deleted pod to leave', async () =>
      (await passing(name)).map((p) => p.address).join() === '10.2.0.3' ? true : undefined,
    );

    await deleteServiceInstance(kc, ns, 'cart');
    await eventually('the ServiceInstance and its services to be gone', async () =>
      (await getServiceInstance(kc, ns, 'cart')) === undefined && (await catalogIds(name)).size === 0 ? true : undefined,
    );
  });

  test('a foreign service of the same name is never touched', async () => {
    const name = `${ns}-search`;
    const foreign = { ID: `foreign-${sfx}`, Name: name, Address: '10.9.9.9', Port: 1, Meta: { owner: 'someone-else' } };
    const reg = await fetch(`${bedEnv('CONSUL_HTTP_ADDR')}/v1/agent/service/register`, {
      method: 'PUT',
      headers: headers(),
      body: JSON.stringify(foreign),
    });
    assert.equal(reg.status, 200);
    await createServiceInstance(kc, ns, 'search', { service: 'search', endpoints: [{ address: '10.2.1.1', port: 80 }] });
    await eventually('our instance to pass', async () => ((await passing(name)).some((p) => p.address === '10.2.1.1') ? true : undefined));
    await deleteServiceInstance(kc, ns, 'search');
    await eventually('our instance to be deregistered', async () => ((await catalogIds(name)).size === 1 ? true : undefined));
    assert.ok((await catalogIds(name)).has(foreign.ID), 'the foreign service is still registered');
  });

  test('a restarted operator deregisters nothing, and a killed one drops out of passing results within the TTL', async () => {
    const name = `${ns}-pay`;
    await createServiceInstance(kc, ns, 'pay', {
      service: 'pay',
      endpoints: [
        { address: '10.2.2.1', port: 80 },
        { address: '10.2.2.2', port: 80 },
      ],
    });
    await eventually('two passing instances', async () => ((await passing(name)).length === 2 ? true : undefined));
    const before = await catalogIds(name);

    // Watch the passing results throughout the restart.
    let minPassing = Infinity;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        minPassing = Math.min(minPassing, (await passing(name)).length);
        await sleep(200);
      }
    })();
    const first = operator;
    assert.ok(first);
    await first.process.stop();
    const stoppedAt = Date.now();
    operator = await startOperator(['--resync-period=3']);
    // Two resyncs of every ServiceInstance on the bed (the operator watches every namespace) by the
    // new process, and more than the TTL since the old one stopped: only the new process can have
    // kept the instances passing.
    await waitForResyncs(operator.metricsUrl, await countServiceInstances(kc), 2, 120_000);
    await sleep(Math.max(0, stoppedAt + (LEASE_TTL + 3) * 1000 - Date.now()));
    watching = false;
    await watcher;
    assert.equal(minPassing, 2, 'both instances stayed passing across the restart');
    assert.deepEqual(await catalogIds(name), before, 'no service was deregistered or re-registered');

    await operator.process.kill();
    operator = undefined;
    await eventually(
      'the instances to leave the passing results',
      async () => ((await passing(name)).length === 0 ? true : undefined),
      (LEASE_TTL + 10) * 1000,
    );
    // They stay in the catalog (critical) until DeregisterCriticalServiceAfter; a new operator
    // brings them back to passing without re-registering.
    operator = await startOperator(['--resync-period=3']);
    await eventually('the instances to pass again', async () => ((await passing(name)).length === 2 ? true : undefined));
  });

  test('with ACLs on, a token limited to another prefix cannot write, and the refusal shows in status', async () => {
    aclAgent = await startAclConsulAgent();
    const devOnly = await aclAgent.createToken(
      'service_prefix "dev-" { policy = "write" }\nnode_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }',
    );
    const secretNs = `secrets-${sfx}`;
    await createNamespace(kc, secretNs);
    await kc
      .makeApiClient(CoreV1Api)
      .createNamespacedSecret({ namespace: secretNs, body: { metadata: { name: 'consul-dev' }, stringData: { token: devOnly } } });
    const prodNs = `prod-${sfx}`;
    await createNamespace(kc, prodNs, { aclenv: sfx });
    await createRegistry(kc, `consul-acl-${sfx}`, {
      type: 'consul',
      default: false,
      namespaceSelector: { matchLabels: { aclenv: sfx } },
      leaseTTLSeconds: LEASE_TTL,
      consul: {
        address: aclAgent.address,
        serviceName: '{namespace}-{service}',
        tokenSecretRef: { name: 'consul-dev', namespace: secretNs },
      },
    });
    await createServiceInstance(kc, prodNs, 'ledger', {
      service: 'ledger',
      registries: [`consul-acl-${sfx}`],
      endpoints: [{ address: '10.2.3.1', port: 80 }],
    });
    const si = await eventually('the refusal in status', async () => {
      const s = await getServiceInstance(kc, prodNs, 'ledger');
      const c = s?.status?.conditions?.find((x) => x.type === 'Registered');
      return c?.status === 'False' && c.reason === 'RegistrationFailed' ? s : undefined;
    });
    const cond = si.status?.conditions?.find((x) => x.type === 'Registered');
    assert.match(cond?.message ?? '', /403|Permission denied|permission/i);
    assert.ok(!(cond?.message ?? '').includes(devOnly), 'the token never appears in status');
    assert.deepEqual(await passing(`${prodNs}-ledger`, aclAgent.address, aclAgent.managementToken), [], 'nothing was written');
  });
});
