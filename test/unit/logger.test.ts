import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/observability/logger.ts';
import { EtcdRegistry } from '../../src/registry/etcd/etcd-registry.ts';

function capture(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

test('secret fields are redacted wherever they appear, and what a reader needs (etcd keys in a dry run) is not', async () => {
  const out = capture();
  const logger = createLogger('info', out.stream);
  logger.info(
    { password: 'p4ss', credentials: { key: '-----BEGIN PRIVATE KEY-----', token: 't0k' }, headers: { authorization: 'Bearer x' } },
    'secrets',
  );
  const backend = new EtcdRegistry({ endpoints: ['http://127.0.0.1:1'], prefix: '/services', clusterId: 'c1', dryRun: true, logger });
  const owner = { clusterId: 'c1', namespace: 'prod', name: 'api' };
  await backend.applyChanges({
    create: [
      {
        registryNamespace: 'prod',
        k8sNamespace: 'prod',
        owner,
        endpoint: {
          service: 'api',
          instanceId: '10.0.0.1:80',
          address: '10.0.0.1',
          port: 80,
          weight: 1,
          tags: {},
          metadata: {},
          source: 'static',
        },
      },
    ],
    updateOld: [],
    updateNew: [],
    delete: [],
  });
  await backend.close();
  const text = JSON.stringify(out.lines());
  for (const secret of ['p4ss', 'PRIVATE KEY', 't0k', 'Bearer']) assert.equal(text.includes(secret), false, `${secret} is redacted`);
  const dry = out.lines().find((l) => l['msg'] === 'dry run: etcd write skipped');
  assert.equal(dry?.['etcdKey'], '/services/prod/api/10.0.0.1:80');
});
