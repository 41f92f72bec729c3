import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DiscoveryConfigError } from '../src/errors.ts';
import { defaultAuthority, parseTargetPath, type ResolvedTarget } from '../src/grpc/target.ts';

describe('gRPC targets read as etcd’s Go resolver reads them', () => {
  const read: { name: string; path: string; want: ResolvedTarget }[] = [
    {
      name: 'a prefix without a leading slash',
      path: 'grpc/prod/greeter',
      want: { prefix: 'grpc', namespace: 'prod', service: 'greeter' },
    },
    {
      name: 'a prefix with a leading slash (the four-slash target)',
      path: '/services/prod/users',
      want: { prefix: '/services', namespace: 'prod', service: 'users' },
    },
    { name: 'a prefix of several segments', path: 'a/b/c/prod/users', want: { prefix: 'a/b/c', namespace: 'prod', service: 'users' } },
    { name: 'the root of the keyspace (prefix "")', path: '/prod/users', want: { prefix: '', namespace: 'prod', service: 'users' } },
    { name: 'a trailing slash', path: 'grpc/prod/greeter/', want: { prefix: 'grpc', namespace: 'prod', service: 'greeter' } },
  ];
  for (const c of read) {
    test(`${c.name} gives prefix, namespace and service`, () => {
      assert.deepEqual(parseTargetPath('etcd', c.path), c.want);
      assert.equal(defaultAuthority('etcd', c.path), c.want.service);
    });
  }

  const refused: { name: string; path: string; says: RegExp }[] = [
    { name: 'only a service', path: 'greeter', says: /does not name a service: dial etcd:\/\/\/<prefix>\/<namespace>\/<service>/ },
    { name: 'no prefix', path: 'prod/greeter', says: /does not name a service/ },
    { name: 'an empty namespace', path: 'grpc//greeter', says: /does not name a service/ },
    { name: 'an empty path', path: '', says: /does not name a service/ },
    { name: 'a dot for a service', path: 'grpc/prod/..', says: /does not name a service/ },
    { name: 'the reserved namespace', path: 'grpc/_kube-registrar/owners', says: /starting with '_'/ },
  ];
  for (const c of refused) {
    test(`a target with ${c.name} is refused with a message saying how to write it`, () => {
      assert.throws(
        () => parseTargetPath('etcd', c.path),
        (err: unknown) => {
          assert.ok(err instanceof DiscoveryConfigError);
          assert.match(err.message, c.says);
          assert.ok(err.message.includes(`etcd:///${c.path}`), `the message names the target: ${err.message}`);
          return true;
        },
      );
      // grpc-js asks for the authority while constructing the channel: it must not throw there.
      assert.equal(defaultAuthority('etcd', c.path), 'localhost');
    });
  }
});
