/**
 * The operator's Kubernetes client (src/kube/kube-config.ts) against the bed's kube-apiserver:
 * API requests share one connection pool instead of opening a TLS connection each, connections
 * left half-open by a network partition are not reused, a change of TLS material gets a new pool,
 * and every request carries a deadline.
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

  // Counted as connections the proxy accepted. Requests one after another need one pooled
  // connection, and that holds however loaded the machine is: undici hands a socket back to its
  // pool one event-loop turn after the response (a setImmediate, in case the server closes it
  // anyway), so the loop yields one turn between requests, and the socket idles only for that
  // turn, never long enough for the keep-alive timeout (4 s). Without the yield, back-to-back
  // requests alternate between two sockets. (Concurrent rounds needed a load-dependent margin:
  // sockets freed early in a slow round could idle out before the next round.) Without a shared
  // pool every request opened a connection of its own.
  test('forty API requests made one after another all go over the one keep-alive connection the first opened', async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const before = proxy.connectionsAccepted;
    for (let i = 0; i < 40; i++) {
      await core.readNamespace({ name: 'default' });
      await new Promise((resolveTurn) => setImmediate(resolveTurn));
    }
    const opened = proxy.connectionsAccepted - before;
    assert.equal(opened, 1, `40 sequential requests opened ${opened} connections instead of reusing one`);
  });

  test('after a network partition heals, requests go through again instead of waiting on half-open connections', async () => {
    const kc = new OperatorKubeConfig(2000);
    kc.loadFromFile(kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const four = (): Promise<PromiseSettledResult<unknown>[]> =>
      Promise.allSettled(Array.from({ length: 4 }, () => core.readNamespace({ name: 'default' })));
    assert.deepEqual(
      (await four()).map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
    );
    proxy.cut('blackhole');
    try {
      assert.deepEqual(
        (await four()).map((r) => r.status),
        ['rejected', 'rejected', 'rejected', 'rejected'],
        'requests during the partition hit their deadline',
      );
    } finally {
      proxy.heal();
    }
    // The connections frozen by the partition stay frozen: a request that lands on one fails at
    // its deadline and takes the connection down with it, so after a round or two every request
    // goes through (over HTTP/2 they kept failing for good).
    const rounds: string[][] = [];
    for (let i = 0; i < 3; i++) rounds.push((await four()).map((r) => r.status));
    assert.deepEqual(
      rounds.at(-1),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
      `rounds after healing: ${JSON.stringify(rounds)}`,
    );
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
    kc.users = kc.users.map((u) =>
      u.name === user.name ? { ...u, certData: Buffer.from('rotated').toString('base64'), certFile: undefined } : u,
    );
    const rotated = await dispatcherOf();
    assert.notEqual(rotated.dispatcher, first.dispatcher);
    assert.equal((await dispatcherOf()).dispatcher, rotated.dispatcher);
  });
});
