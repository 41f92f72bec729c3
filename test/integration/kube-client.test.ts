/**
 * The operator's Kubernetes client (src/kube/kube-config.ts, api.ts, transport.ts) against the
 * bed's kube-apiserver: API requests share one connection pool instead of opening a TLS connection
 * each, connections left half-open by a network partition are not reused, a change of TLS material
 * gets a new pool, every request carries a deadline, watches deliver events and end as the
 * informer expects, and the operator's requests never load undici.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { Agent } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { CoreV1Api, RequestContext, HttpMethod } from '@kubernetes/client-node';
import { kubeRequest } from '../../src/kube/api.ts';
import { OperatorKubeConfig } from '../../src/kube/kube-config.ts';
import { watchOverHttp } from '../../src/kube/transport.ts';
import { bedEnv } from '../support/env.ts';
import { kubeconfigVia, TcpProxy } from '../support/faults.ts';

/** How one watch ended, and the events it delivered before. */
interface WatchOutcome {
  readonly events: { type: string; name: string | undefined; code?: number | undefined }[];
  readonly end: unknown;
}

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

  // The operator's own requests (api.ts over transport.ts): the same pooling, as above.
  test('forty operator requests made one after another all go over the one keep-alive connection the first opened', async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(kubeconfig);
    const before = proxy.connectionsAccepted;
    for (let i = 0; i < 40; i++) {
      const ns = await kubeRequest<{ metadata: { name: string } }>(kc, { method: 'GET', path: '/api/v1/namespaces/default' });
      assert.equal(ns.metadata.name, 'default');
      await new Promise((resolveTurn) => setImmediate(resolveTurn));
    }
    const opened = proxy.connectionsAccepted - before;
    assert.equal(opened, 1, `40 sequential requests opened ${opened} connections instead of reusing one`);
  });

  test('operator requests hit their deadline in a partition and go through again once it heals', async () => {
    const kc = new OperatorKubeConfig(2000);
    kc.loadFromFile(kubeconfig);
    const four = (): Promise<string[]> =>
      Promise.allSettled(Array.from({ length: 4 }, () => kubeRequest(kc, { method: 'GET', path: '/api/v1/namespaces/default' }))).then(
        (rs) => rs.map((r) => r.status),
      );
    assert.deepEqual(await four(), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    proxy.cut('blackhole');
    const startedAt = Date.now();
    try {
      assert.deepEqual(await four(), ['rejected', 'rejected', 'rejected', 'rejected'], 'requests during the partition hit their deadline');
    } finally {
      proxy.heal();
    }
    assert.ok(Date.now() - startedAt >= 1900, 'they failed at the deadline, not before');
    const rounds: string[][] = [];
    for (let i = 0; i < 3; i++) rounds.push(await four());
    assert.deepEqual(
      rounds.at(-1),
      ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'],
      `rounds after healing: ${JSON.stringify(rounds)}`,
    );
  });

  test('an API error arrives as an ApiException with the HTTP status and the server message', async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(kubeconfig);
    const name = `absent-${randomUUID().slice(0, 8)}`;
    await assert.rejects(kubeRequest(kc, { method: 'GET', path: `/api/v1/namespaces/${name}` }), (err: unknown) => {
      const e = err as { code?: unknown; message?: unknown };
      assert.equal(e.code, 404);
      assert.match(String(e.message), new RegExp(`namespaces "${name}" not found`));
      return true;
    });
  });

  test('operator requests get the same agent until the TLS material changes, and a changed one retires the old pool', async () => {
    const kc = new OperatorKubeConfig();
    kc.loadFromFile(kubeconfig);
    const agentOf = async (): Promise<Agent> => {
      const opts: { agent?: Agent } = {};
      await kc.applyToHTTPSOptions(opts);
      assert.ok(opts.agent, 'an agent is handed out');
      return opts.agent;
    };
    const first = await agentOf();
    assert.equal(await agentOf(), first);
    assert.equal((first as unknown as { keepAlive: boolean }).keepAlive, true, 'the pool keeps connections alive');
    await kubeRequest(kc, { method: 'GET', path: '/api/v1/namespaces/default' });
    await new Promise((resolveTurn) => setImmediate(resolveTurn));
    const idle = Object.values(first.freeSockets).flat();
    assert.equal(idle.length, 1, 'the request left its connection idle in the pool');
    const user = kc.getCurrentUser();
    assert.ok(user);
    kc.users = kc.users.map((u) =>
      u.name === user.name ? { ...u, certData: Buffer.from('rotated').toString('base64'), certFile: undefined } : u,
    );
    const rotated = await agentOf();
    assert.notEqual(rotated, first);
    assert.equal(await agentOf(), rotated);
    assert.equal(idle[0]?.destroyed, true, "the retired pool's idle connection was closed");
  });

  describe('watches over the operator transport', () => {
    const namespace = `watch-${randomUUID().slice(0, 8)}`;
    let kc: OperatorKubeConfig;
    before(async () => {
      kc = new OperatorKubeConfig();
      kc.loadFromFile(bedEnv('KUBECONFIG'));
      await kubeRequest(kc, { method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: namespace } } });
    });
    after(async () => {
      await kubeRequest(kc, { method: 'DELETE', path: `/api/v1/namespaces/${namespace}` });
    });

    /** Watches ConfigMaps of the namespace until the watch ends or `stopAfter` events came. */
    const watchOnce = (
      params: Record<string, string | number | boolean>,
      options: { idleMs?: number; stopAfter?: number; onStarted?: () => Promise<void> },
    ): Promise<WatchOutcome> =>
      new Promise<WatchOutcome>((resolveOutcome, rejectOutcome) => {
        const events: WatchOutcome['events'] = [];
        let controller: AbortController | undefined;
        watchOverHttp(
          kc,
          `/api/v1/namespaces/${namespace}/configmaps`,
          params,
          (type, obj) => {
            const o = obj as { metadata?: { name?: string }; code?: number };
            events.push(type === 'ERROR' ? { type, name: undefined, code: o.code } : { type, name: o.metadata?.name });
            if (options.stopAfter !== undefined && events.length >= options.stopAfter) controller?.abort();
          },
          (end) => resolveOutcome({ events, end }),
          options.idleMs,
        )
          .then(async (c) => {
            controller = c;
            await options.onStarted?.();
          })
          .catch(rejectOutcome);
      });

    /**
     * {@link watchOnce}, again while the server answers 504 "too large resource version": its
     * watch cache has not caught up with a write just made, and it asks to be retried after a
     * second (the informer does the same). `onStarted` runs once, in the first attempt.
     */
    const watchConfigMaps = async (
      params: Record<string, string | number | boolean>,
      options: { idleMs?: number; stopAfter?: number; onStarted?: () => Promise<void> } = {},
    ): Promise<WatchOutcome> => {
      let onStarted = options.onStarted;
      for (let attempt = 1; ; attempt++) {
        const outcome = await watchOnce(params, { ...options, ...(onStarted ? { onStarted } : {}) });
        onStarted = undefined;
        const lagging = outcome.events.length === 1 && outcome.events[0]?.type === 'ERROR' && outcome.events[0].code === 504;
        if (!lagging || attempt === 20) return outcome;
        await new Promise((resolveLater) => setTimeout(resolveLater, 1000));
      }
    };

    /** The resource version of the namespace's ConfigMaps now, from a list. */
    const listedVersion = async (): Promise<string> =>
      (
        await kubeRequest<{ metadata: { resourceVersion: string } }>(kc, {
          method: 'GET',
          path: `/api/v1/namespaces/${namespace}/configmaps`,
        })
      ).metadata.resourceVersion;

    test('delivers the events of objects written while it runs, then ends with an AbortError when aborted', async () => {
      const names = ['one', 'two', 'three'];
      const outcome = await watchConfigMaps(
        { resourceVersion: await listedVersion() },
        {
          stopAfter: names.length,
          onStarted: async () => {
            for (const name of names)
              await kubeRequest(kc, {
                method: 'POST',
                path: `/api/v1/namespaces/${namespace}/configmaps`,
                body: { metadata: { name }, data: { big: 'x'.repeat(100_000) } },
              });
          },
        },
      );
      assert.deepEqual(
        outcome.events,
        names.map((name) => ({ type: 'ADDED', name })),
      );
      assert.equal((outcome.end as Error).name, 'AbortError');
    });

    test('a watch silent for its idle timeout ends with a TimeoutError', async () => {
      const list = await kubeRequest<{ metadata: { resourceVersion: string } }>(kc, {
        method: 'GET',
        path: `/api/v1/namespaces/${namespace}/configmaps`,
      });
      const startedAt = Date.now();
      const outcome = await watchConfigMaps({ resourceVersion: list.metadata.resourceVersion }, { idleMs: 1500 });
      assert.deepEqual(outcome.events, []);
      assert.equal((outcome.end as Error).name, 'TimeoutError');
      assert.ok(Date.now() - startedAt >= 1400, 'it ended at the idle timeout');
    });

    test('a watch the server bounds with timeoutSeconds ends cleanly, with null', async () => {
      const list = await kubeRequest<{ metadata: { resourceVersion: string } }>(kc, {
        method: 'GET',
        path: `/api/v1/namespaces/${namespace}/configmaps`,
      });
      const outcome = await watchConfigMaps({ resourceVersion: list.metadata.resourceVersion, timeoutSeconds: 1 }, { idleMs: 20_000 });
      assert.deepEqual(outcome.events, []);
      assert.equal(outcome.end, null);
    });

    test('a watch the server refuses ends with the HTTP status as statusCode', async () => {
      const outcome = await watchConfigMaps({ labelSelector: '!!not a selector' });
      assert.equal((outcome.end as { statusCode?: number }).statusCode, 400);
    });
  });

  test('the operator lists and watches without ever loading undici', async () => {
    const script = [
      `import { registerHooks } from 'node:module';`,
      `const undici = [];`,
      `registerHooks({ resolve(s, c, next) { const r = next(s, c); if (r.url.includes('/node_modules/undici/')) undici.push(r.url); return r; } });`,
      `const { OperatorKubeConfig } = await import(${JSON.stringify(new URL('../../src/kube/kube-config.ts', import.meta.url).href)});`,
      `const { kubeRequest } = await import(${JSON.stringify(new URL('../../src/kube/api.ts', import.meta.url).href)});`,
      `const { watchOverHttp } = await import(${JSON.stringify(new URL('../../src/kube/transport.ts', import.meta.url).href)});`,
      `const kc = new OperatorKubeConfig(); kc.loadFromFile(process.env.KUBECONFIG);`,
      `const list = await kubeRequest(kc, { method: 'GET', path: '/api/v1/namespaces', query: { limit: 5 } });`,
      `const events = await new Promise((res) => { const seen = []; watchOverHttp(kc, '/api/v1/namespaces', { resourceVersion: '0' }, (t) => seen.push(t), () => res(seen)).then((c) => setTimeout(() => c.abort(), 500)); });`,
      `console.log(JSON.stringify({ listed: list.items.length, events: events.length, undici }));`,
    ].join('\n');
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, KUBECONFIG: bedEnv('KUBECONFIG') },
    });
    const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { listed: number; events: number; undici: string[] };
    assert.ok(result.listed > 0, 'it listed namespaces');
    assert.ok(result.events > 0, 'the watch delivered the namespaces as ADDED events');
    assert.deepEqual(result.undici, [], 'no module of undici was loaded');
  });
});
