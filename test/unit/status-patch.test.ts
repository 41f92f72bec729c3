import assert from 'node:assert/strict';
import { test } from 'node:test';

import { withRemovals } from '../../src/kube/custom-objects.ts';

test('a status patch removes, at any depth, the fields the new status no longer has', () => {
  const previous = {
    conditions: [{ type: 'EndpointsHealthy' }],
    health: { healthy: 1, unhealthy: 1, unhealthyEndpoints: [{ port: 80 }] },
    readyRatio: '1/2',
  };
  assert.deepEqual(withRemovals(previous, { conditions: [], readyRatio: '2/2' }), { conditions: [], readyRatio: '2/2', health: null });
  assert.deepEqual(withRemovals(previous, { health: { healthy: 2, unhealthy: 0 }, readyRatio: '2/2' }), {
    conditions: null,
    health: { healthy: 2, unhealthy: 0, unhealthyEndpoints: null },
    readyRatio: '2/2',
  });
});

test('a status patch of an object without status is the new status itself', () => {
  const next = { readyRatio: '0/1' };
  assert.equal(withRemovals(undefined, next), next);
});
