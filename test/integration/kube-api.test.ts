/**
 * The operator's API requests (src/kube/api.ts: plain JSON over client-node's KubeConfig) against
 * the bed's kube-apiserver: they share the KubeConfig's one connection pool, lists follow continue
 * tokens, and errors carry the HTTP status and the apiserver's message, which the reconcilers and
 * the leader elector branch on (404, 409).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { V1MicroTime } from '@kubernetes/client-node';
import { kubeRequest } from '../../src/kube/api.ts';
import { OperatorKubeConfig } from '../../src/kube/kube-config.ts';
import { kubeLeaseApi } from '../../src/controller/leader.ts';
import { KubeEventRecorder, SPAM_BURST } from '../../src/kube/events.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { adminKubeConfig, bedEnv, uniqueSuffix } from '../support/env.ts';
import { kubeconfigVia, TcpProxy } from '../support/faults.ts';
import { eventsFor } from '../support/kube.ts';

let proxy: TcpProxy;
let kubeconfig: string;

function operatorKubeConfig(file = bedEnv('KUBECONFIG')): OperatorKubeConfig {
  const kc = new OperatorKubeConfig();
  kc.loadFromFile(file);
  return kc;
}

describe("the operator's Kubernetes API requests", () => {
  before(async () => {
    proxy = await TcpProxy.start(operatorKubeConfig().getCurrentCluster()?.server ?? '');
    kubeconfig = await kubeconfigVia(bedEnv('KUBECONFIG'), proxy.url('https'));
  });

  after(async () => {
    await proxy.close();
  });

  // See kube-client.test.ts for why the loop yields one turn between requests.
  test('forty requests made one after another all go over the one keep-alive connection the first opened', async () => {
    const kc = operatorKubeConfig(kubeconfig);
    const before = proxy.connectionsAccepted;
    for (let i = 0; i < 40; i++) {
      const ns = await kubeRequest<{ metadata?: { name?: string } }>(kc, { method: 'GET', path: '/api/v1/namespaces/default' });
      assert.equal(ns.metadata?.name, 'default');
      await new Promise((resolveTurn) => setImmediate(resolveTurn));
    }
    const opened = proxy.connectionsAccepted - before;
    assert.equal(opened, 1, `40 sequential requests opened ${opened} connections instead of reusing one`);
  });

  test('a list read in pages of one follows the continue tokens to every object the whole list has', async () => {
    const kc = operatorKubeConfig();
    interface NamespaceList {
      items: { metadata?: { name?: string } }[];
      metadata?: { continue?: string };
    }
    const whole = await kubeRequest<NamespaceList>(kc, { method: 'GET', path: '/api/v1/namespaces' });
    assert.ok(whole.items.length >= 2, 'the bed has several namespaces');
    const paged: string[] = [];
    let cont: string | undefined;
    do {
      const page = await kubeRequest<NamespaceList>(kc, { method: 'GET', path: '/api/v1/namespaces', query: { limit: 1, continue: cont } });
      assert.ok(page.items.length <= 1);
      paged.push(...page.items.map((n) => n.metadata?.name ?? ''));
      cont = page.metadata?.continue || undefined;
    } while (cont);
    assert.deepEqual(paged.sort(), whole.items.map((n) => n.metadata?.name ?? '').sort());
  });

  test("an error carries the HTTP status and the apiserver's message", async () => {
    const kc = operatorKubeConfig();
    const name = `missing-${uniqueSuffix()}`;
    await assert.rejects(kubeRequest(kc, { method: 'GET', path: `/api/v1/namespaces/${name}` }), (err: unknown) => {
      const e = err as { code?: unknown; message?: unknown };
      assert.equal(e.code, 404);
      assert.match(String(e.message), new RegExp(`namespaces "${name}" not found`));
      return true;
    });
  });

  test('Lease writes: create, a replace from the current read, and a replace from a stale read refused with 409', async () => {
    const api = kubeLeaseApi(operatorKubeConfig());
    const name = `lease-${uniqueSuffix()}`;
    const signal = AbortSignal.timeout(30_000);
    const now = new V1MicroTime();
    await api.create('default', { metadata: { name, namespace: 'default' }, spec: { holderIdentity: 'a', renewTime: now } }, signal);
    const read = await api.read('default', name, signal);
    assert.equal(read.spec?.holderIdentity, 'a');
    // Lease times are MicroTime: the apiserver keeps microseconds and hands back what it parsed.
    assert.equal(new Date(read.spec?.renewTime ?? 0).getTime(), now.getTime());
    await api.replace('default', name, { ...read, spec: { ...read.spec, holderIdentity: 'b' } }, signal);
    assert.equal((await api.read('default', name, signal)).spec?.holderIdentity, 'b');
    await assert.rejects(api.replace('default', name, { ...read, spec: { ...read.spec, holderIdentity: 'c' } }, signal), (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, 409);
      return true;
    });
    await kubeRequest(operatorKubeConfig(), { method: 'DELETE', path: `/apis/coordination.k8s.io/v1/namespaces/default/leases/${name}` });
  });

  test('events: an object records a burst and then no more, its warnings keep an allowance of their own, repeats fold', async () => {
    const recorder = new KubeEventRecorder(operatorKubeConfig(), createLogger('error'));
    const name = `events-${uniqueSuffix()}`;
    const target = { apiVersion: 'v1', kind: 'ConfigMap', name, namespace: 'default' };
    for (let i = 0; i < SPAM_BURST + 10; i++) recorder.normal(target, 'Registered', `change ${i}`);
    recorder.warning(target, 'RegistrationFailed', 'the registry refused');
    recorder.warning(target, 'RegistrationFailed', 'the registry refused');
    await recorder.flush();
    const events = await eventsFor(adminKubeConfig(), 'default', name);
    const normal = events.filter((e) => e.type === 'Normal').map((e) => e.message);
    assert.equal(normal.length, SPAM_BURST, 'the burst was written');
    assert.ok(normal.includes('change 0') && normal.includes(`change ${SPAM_BURST - 1}`) && !normal.includes(`change ${SPAM_BURST}`));
    assert.equal(recorder.filtered, 10, 'the rest were held back and counted');
    const warnings = events.filter((e) => e.type === 'Warning');
    assert.equal(warnings.length, 1, 'the warning was written, once: its repeat folded into it');
    const list = await kubeRequest<{ items: { count?: number; reason?: string }[] }>(operatorKubeConfig(), {
      method: 'GET',
      path: `/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D${name}`,
    });
    assert.equal(list.items.find((e) => e.reason === 'RegistrationFailed')?.count, 2);
  });
});
