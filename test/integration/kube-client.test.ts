/**
 * The operator's Kubernetes client (src/kube/kube-config.ts) against the bed's kube-apiserver:
 * API requests share one connection pool instead of opening a TLS connection each, a change of
 * TLS material gets a new pool, and every request carries a deadline.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, RequestContext, HttpMethod } from '@kubernetes/client-node';
import { OperatorKubeConfig } from '../../src/kube/kube-config.ts';
import { bedEnv } from '../support/env.ts';
import { kubeconfigVia, TcpProxy } from '../support/faults.ts';

let proxy: TcpProxy;
let kubeconfig: string;

describe('the operator Kubernetes client', () => {
  before(async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(bedEnv('KUBECONFIG'));
    proxy = await TcpProxy.start(kc.getCurrentCluster()?.server ?? '');
    kubeconfig = await kubeconfigVia(bedEnv('KUBECONFIG'), proxy.url('https'));
  });

  after(async () => {
    await proxy.close();
  });

  test('forty API requests, twenty at a time, reuse a handful of connections', async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const before = proxy.connectionsAccepted;
    for (let round = 0; round < 2; round++) {
      await Promise.all(Array.from({ length: 20 }, () => core.readNamespace({ name: 'default' })));
    }
    const opened = proxy.connectionsAccepted - before;
    assert.ok(opened <= 20, `40 requests opened ${opened} connections; the second round must reuse the first round's`);
  });

  test('requests get the same dispatcher until the TLS material changes, and a deadline', async () => {
    const kc = new OperatorKubeConfig(1234);
    kc.loadFromFile(kubeconfig);
    const dispatcherOf = async (): Promise<{ dispatcher: unknown; signal: AbortSignal | undefined }> => {
      const ctx = new RequestContext(`${kc.getCurrentCluster()?.server ?? ''}/api`, HttpMethod.GET);
      await kc.applySecurityAuthentication(ctx);
      return { dispatcher: ctx.getDispatcher(), signal: ctx.getSignal() };
    };
    const first = await dispatcherOf();
    assert.ok(first.dispatcher !== undefined, 'a TLS cluster gets a dispatcher');
    assert.ok(first.signal !== undefined && !first.signal.aborted, 'every request carries a deadline');
    assert.equal((await dispatcherOf()).dispatcher, first.dispatcher);
    // A rotated client certificate (here: another one) must not keep using the old pool.
    const user = kc.getCurrentUser();
    assert.ok(user);
    kc.users = kc.users.map((u) => (u.name === user.name ? { ...u, certData: Buffer.from('rotated').toString('base64'), certFile: undefined } : u));
    const rotated = await dispatcherOf();
    assert.notEqual(rotated.dispatcher, first.dispatcher);
    assert.equal((await dispatcherOf()).dispatcher, rotated.dispatcher);
  });
});
