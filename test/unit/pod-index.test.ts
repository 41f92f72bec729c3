/**
 * The pod label index: for any selector, the endpoints found among its candidates are exactly
 * those found among all of the namespace's pods.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { desiredEndpoints, type LabelSelectorLike } from '../../src/source/endpoints.ts';
import { PodLabelIndex, sameLabels } from '../../src/source/pod-index.ts';
import type { SlimPod } from '../../src/source/pods.ts';

function pod(i: number, labels: Record<string, string>): SlimPod {
  return {
    metadata: { name: `p${i}`, namespace: 'ns', labels, terminating: false },
    ip: `10.2.${Math.floor(i / 250)}.${(i % 250) + 1}`,
    ready: i % 7 !== 0,
    finished: false,
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  };
}

void describe('PodLabelIndex', () => {
  const apps = ['a', 'b', 'c'];
  const tiers = ['web', 'db'];
  const pods = Array.from({ length: 300 }, (_, i) => {
    const labels: Record<string, string> = { app: apps[i % 3] ?? 'a' };
    if (i % 4 !== 0) labels['tier'] = tiers[i % 2] ?? 'web';
    return pod(i, labels);
  });
  const index = new PodLabelIndex(pods);
  const selectors: LabelSelectorLike[] = [
    { matchLabels: { app: 'a' } },
    { matchLabels: { app: 'b', tier: 'db' } },
    { matchLabels: { app: 'nobody' } },
    { matchLabels: {} },
    { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] },
    { matchLabels: { app: 'c' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['web'] }] },
  ];

  void it('finds for every selector exactly the endpoints a scan of all pods finds', () => {
    for (const selector of selectors) {
      const spec = { service: 's', selector, port: 'http' as const, weight: 1 };
      const input = { namespace: 'ns', name: 'si', spec };
      const all = desiredEndpoints(input, pods);
      const indexed = desiredEndpoints(input, index.candidates(selector));
      assert.deepEqual(indexed, all, JSON.stringify(selector));
    }
  });

  void it('narrows a selector with matchLabels to the pods carrying its rarest pair', () => {
    const candidates = index.candidates({ matchLabels: { app: 'b', tier: 'db' } });
    assert.ok(candidates.length < pods.length / 3 + 1);
    assert.ok(candidates.every((p) => p.metadata.labels['app'] === 'b' || p.metadata.labels['tier'] === 'db'));
    assert.deepEqual(index.candidates({ matchLabels: { app: 'nobody' } }), []);
    assert.equal(index.candidates({}).length, pods.length);
  });

  void it('hands out pods as `current` says they are now, leaving out those it no longer knows', () => {
    const live = new Map(pods.map((p) => [p.metadata.name, p]));
    const tracked = new PodLabelIndex(pods, (p) => live.get(p.metadata.name));
    const selector = { matchLabels: { app: 'a' } };
    const before = tracked.candidates(selector);
    const [first, second] = before as [SlimPod, SlimPod];
    // A readiness change keeps the labels, so the index stays: the change must still be seen.
    live.set(first.metadata.name, { ...first, ready: !first.ready });
    live.delete(second.metadata.name);
    const after = tracked.candidates(selector);
    assert.equal(after.length, before.length - 1);
    assert.equal(after.find((p) => p.metadata.name === first.metadata.name)?.ready, !first.ready);
    assert.ok(!after.some((p) => p.metadata.name === second.metadata.name));
    const spec = { service: 's', selector, port: 'http' as const, weight: 1 };
    const input = { namespace: 'ns', name: 'si', spec };
    assert.deepEqual(desiredEndpoints(input, after), desiredEndpoints(input, [...live.values()]));
  });

  void it('tells label maps apart by their pairs, not their order or identity', () => {
    assert.ok(sameLabels({ app: 'a', tier: 'web' }, { tier: 'web', app: 'a' }));
    assert.ok(sameLabels({}, {}));
    assert.ok(!sameLabels({ app: 'a' }, { app: 'b' }));
    assert.ok(!sameLabels({ app: 'a' }, { app: 'a', tier: 'web' }));
    assert.ok(!sameLabels({ app: 'a', tier: 'web' }, { app: 'a' }));
  });
});
