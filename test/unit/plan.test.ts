import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { calculatePlan, entryKey, isEmptyPlan, PlanInputError } from '../../src/plan/plan.ts';
import type { Policy } from '../../src/plan/plan.ts';
import type { Changes, Endpoint, Owner, RegistryEntry } from '../../src/registry/types.ts';

const owner: Owner = { clusterId: 'cluster-a', namespace: 'prod', name: 'user-service' };
const otherOwner: Owner = { clusterId: 'cluster-b', namespace: 'prod', name: 'user-service' };

function entry(ip: string, overrides: Partial<Endpoint> = {}, extra: Partial<RegistryEntry> = {}): RegistryEntry {
  const port = overrides.port ?? 8080;
  return {
    registryNamespace: 'prod',
    k8sNamespace: 'prod',
    owner,
    ...extra,
    endpoint: {
      service: 'user-service',
      instanceId: `${ip}:${port}`,
      address: ip,
      port,
      weight: 1,
      tags: { version: '1.0' },
      metadata: { team: 'core' },
      source: `pod/prod/user-${ip}`,
      ...overrides,
    },
  };
}

const keys = (entries: readonly RegistryEntry[]): string[] => entries.map(entryKey);

interface Case {
  readonly name: string;
  readonly current: readonly RegistryEntry[];
  readonly desired: readonly RegistryEntry[];
  readonly policy?: Policy;
  readonly want: { create?: RegistryEntry[]; update?: Array<[RegistryEntry, RegistryEntry]>; delete?: RegistryEntry[] };
}

const a = entry('10.0.0.1');
const b = entry('10.0.0.2');
const c = entry('10.0.0.3');

const cases: Case[] = [
  { name: 'an empty registry and no desired entries produce no changes', current: [], desired: [], want: {} },
  { name: 'desired entries missing from the registry are created', current: [], desired: [a, b], want: { create: [a, b] } },
  {
    name: 'entries already registered exactly as desired produce no changes',
    current: [a, b],
    desired: [entry('10.0.0.2'), entry('10.0.0.1')],
    want: {},
  },
  {
    name: 'registered entries no longer desired are deleted under the sync policy',
    current: [a, b, c],
    desired: [b],
    want: { delete: [a, c] },
  },
  {
    name: 'registered entries no longer desired are kept under the upsert-only policy',
    current: [a, b],
    desired: [],
    policy: 'upsert-only',
    want: {},
  },
  {
    name: 'upsert-only still creates and updates',
    current: [a],
    desired: [entry('10.0.0.1', { weight: 5 }), b],
    policy: 'upsert-only',
    want: { create: [b], update: [[a, entry('10.0.0.1', { weight: 5 })]] },
  },
  {
    name: 'a changed weight is an update',
    current: [a],
    desired: [entry('10.0.0.1', { weight: 3 })],
    want: { update: [[a, entry('10.0.0.1', { weight: 3 })]] },
  },
  {
    name: 'a changed tag value is an update',
    current: [a],
    desired: [entry('10.0.0.1', { tags: { version: '2.0' } })],
    want: { update: [[a, entry('10.0.0.1', { tags: { version: '2.0' } })]] },
  },
  {
    name: 'an added tag is an update',
    current: [a],
    desired: [entry('10.0.0.1', { tags: { version: '1.0', zone: 'a' } })],
    want: { update: [[a, entry('10.0.0.1', { tags: { version: '1.0', zone: 'a' } })]] },
  },
  {
    name: 'a removed metadata key is an update',
    current: [a],
    desired: [entry('10.0.0.1', { metadata: {} })],
    want: { update: [[a, entry('10.0.0.1', { metadata: {} })]] },
  },
  {
    name: 'a changed source (pod replaced at the same address) is an update',
    current: [a],
    desired: [entry('10.0.0.1', { source: 'pod/prod/user-new' })],
    want: { update: [[a, entry('10.0.0.1', { source: 'pod/prod/user-new' })]] },
  },
  {
    name: 'a hand-edited address under an unchanged instance id is an update that repairs it',
    current: [entry('10.0.0.1', { address: '10.9.9.9' })],
    desired: [a],
    want: { update: [[entry('10.0.0.1', { address: '10.9.9.9' }), a]] },
  },
  {
    name: 'an entry the backend flags as needing a rewrite is updated even when every field matches',
    current: [{ ...a, needsRewrite: true }],
    desired: [a],
    want: { update: [[{ ...a, needsRewrite: true }, a]] },
  },
  {
    name: 'tag order does not matter',
    current: [entry('10.0.0.1', { tags: { x: '1', y: '2' } })],
    desired: [entry('10.0.0.1', { tags: { y: '2', x: '1' } })],
    want: {},
  },
  {
    name: 'a new port is a different instance: the new one is created and the old one deleted',
    current: [a],
    desired: [entry('10.0.0.1', { port: 9090 })],
    want: { create: [entry('10.0.0.1', { port: 9090 })], delete: [a] },
  },
  {
    name: 'the same instance in two registry namespaces is two entries',
    current: [a],
    desired: [a, entry('10.0.0.1', {}, { registryNamespace: 'env-prod' })],
    want: { create: [entry('10.0.0.1', {}, { registryNamespace: 'env-prod' })] },
  },
  {
    name: 'the same instance in two services is two entries',
    current: [a],
    desired: [a, entry('10.0.0.1', { service: 'other' })],
    want: { create: [entry('10.0.0.1', { service: 'other' })] },
  },
  {
    name: 'a current entry of another owner is never deleted even if the caller forgot to filter',
    current: [entry('10.0.0.1', {}, { owner: otherOwner })],
    desired: [],
    want: {},
  },
  {
    name: 'a duplicate desired key keeps the first occurrence',
    current: [],
    desired: [a, entry('10.0.0.1', { weight: 9 })],
    want: { create: [a] },
  },
  {
    name: 'IPv6 instances are matched by their bracketed instance id',
    current: [entry('[fd00::1]', { address: 'fd00::1' })],
    desired: [entry('[fd00::1]', { address: 'fd00::1' })],
    want: {},
  },
];

void describe('calculatePlan', () => {
  for (const tc of cases) {
    void it(tc.name, () => {
      const got = calculatePlan({ current: tc.current, desired: tc.desired, owner, policy: tc.policy ?? 'sync' });
      const want: Changes = {
        create: tc.want.create ?? [],
        updateOld: (tc.want.update ?? []).map(([old]) => old),
        updateNew: (tc.want.update ?? []).map(([, next]) => next),
        delete: tc.want.delete ?? [],
      };
      assert.deepEqual(keys(got.create), keys(want.create));
      assert.deepEqual(got.create, want.create);
      assert.deepEqual(got.updateOld, want.updateOld);
      assert.deepEqual(got.updateNew, want.updateNew);
      assert.deepEqual(got.delete, want.delete);
      assert.equal(isEmptyPlan(got), want.create.length + want.updateNew.length + want.delete.length === 0);
    });
  }

  void it('desired entries owned by someone else are rejected as a caller bug', () => {
    assert.throws(
      () => calculatePlan({ current: [], desired: [entry('10.0.0.1', {}, { owner: otherOwner })], owner, policy: 'sync' }),
      PlanInputError,
    );
  });

  void it('output lists are sorted by key whatever the input order', () => {
    const got = calculatePlan({ current: [c, a], desired: [entry('10.0.0.9'), entry('10.0.0.5')], owner, policy: 'sync' });
    assert.deepEqual(keys(got.create), keys([entry('10.0.0.5'), entry('10.0.0.9')]));
    assert.deepEqual(keys(got.delete), keys([a, c]));
  });
});
