import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { decodeHealth, decodeHealthEntry } from '../src/consul/decode.ts';
import { asciiJson, chunked } from '../src/consul/meta.ts';

/** A health entry as Consul answers it, with the fields the decoder reads. */
function entry(service: Record<string, unknown>, nodeAddress = '192.168.0.9'): unknown {
  return {
    Node: { Node: 'n1', Address: nodeAddress },
    Service: { ID: 'svc-1', Tags: [], Meta: {}, Weights: { Passing: 1, Warning: 1 }, ...service },
  };
}

describe('decodeHealthEntry', () => {
  const cases: { name: string; service: Record<string, unknown>; want: unknown }[] = [
    {
      name: 'an operator entry reads its instance id, weight, and tags and metadata from the JSON Meta',
      service: {
        ID: 'kr-user-10.0.0.1:8080-abc',
        Address: '10.0.0.1',
        Port: 8080,
        Tags: ['zone=a'],
        Weights: { Passing: 5, Warning: 1 },
        Meta: { 'kr-instance': '10.0.0.1:8080', 'kr-tags': '{"version":"1.0","zone":"a"}', 'kr-metadata': '{"team":"core"}' },
      },
      want: {
        id: '10.0.0.1:8080',
        address: '10.0.0.1',
        port: 8080,
        weight: 5,
        tags: { version: '1.0', zone: 'a' },
        metadata: { team: 'core' },
      },
    },
    {
      name: 'a service registered by hand gets its Consul id, k=v Tags as a map (no = means value empty), no metadata',
      service: { ID: 'by-hand', Address: '10.0.0.2', Port: 80, Tags: ['zone=b', 'canary', 'expr=a=b'], Meta: { team: 'x' } },
      want: { id: 'by-hand', address: '10.0.0.2', port: 80, weight: 1, tags: { zone: 'b', canary: '', expr: 'a=b' }, metadata: {} },
    },
    {
      name: 'an empty service address falls back to the node address',
      service: { Address: '', Port: 80 },
      want: { id: 'svc-1', address: '192.168.0.9', port: 80, weight: 1, tags: {}, metadata: {} },
    },
    {
      name: 'damaged JSON tags fall back to the Consul Tags',
      service: { Address: '10.0.0.3', Port: 80, Tags: ['zone=c'], Meta: { 'kr-tags': '{"zone":', 'kr-metadata': '[1]' } },
      want: { id: 'svc-1', address: '10.0.0.3', port: 80, weight: 1, tags: { zone: 'c' }, metadata: {} },
    },
    {
      name: 'missing Weights read as weight 1',
      service: { Address: '10.0.0.4', Port: 80, Weights: null },
      want: { id: 'svc-1', address: '10.0.0.4', port: 80, weight: 1, tags: {}, metadata: {} },
    },
    { name: 'a heartbeat is not an endpoint', service: { Address: '', Port: 0, Meta: { 'kr-role': 'heartbeat' } }, want: 'string' },
    { name: 'a service without a port is left out', service: { Address: '10.0.0.5', Port: 0 }, want: 'string' },
    { name: 'a port that is not a number is left out', service: { Address: '10.0.0.5', Port: '80' }, want: 'string' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = decodeHealthEntry(entry(c.service));
      if (c.want === 'string') assert.equal(typeof got, 'string');
      else assert.deepEqual(got, c.want);
    });
  }

  test('no address at all is left out', () => {
    assert.equal(typeof decodeHealthEntry(entry({ Address: '', Port: 80 }, '')), 'string');
  });

  test('tags and metadata chunked over several Meta keys are joined again, non-ASCII included', () => {
    const tags: Record<string, string> = {};
    for (let i = 0; i < 60; i++) tags[`key-${i}`] = `välue-${i}`;
    const meta = Object.fromEntries([...chunked('kr-tags', asciiJson(tags)), ...chunked('kr-metadata', asciiJson({ ü: 'ß' }))]);
    assert.ok('kr-tags-1' in meta, 'the fixture is long enough to be chunked');
    const got = decodeHealthEntry(entry({ Address: '10.0.0.6', Port: 80, Meta: meta }));
    assert.deepEqual(typeof got === 'string' ? got : [got.tags, got.metadata], [tags, { ü: 'ß' }]);
  });
});

describe('decodeHealth', () => {
  test('keeps what it can use, sorted by id, and names what it leaves out', () => {
    const got = decodeHealth([
      entry({ ID: 'b', Address: '10.0.0.2', Port: 80 }),
      'nonsense',
      entry({ ID: 'hb', Meta: { 'kr-role': 'heartbeat' }, Port: 0 }),
      entry({ ID: 'a', Address: '10.0.0.1', Port: 80 }),
    ]);
    assert.deepEqual(
      got.instances.map((i) => i.id),
      ['a', 'b'],
    );
    assert.deepEqual(
      got.skipped.map((s) => s.id),
      ['', 'hb'],
    );
  });
});
