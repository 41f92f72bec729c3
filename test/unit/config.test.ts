import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig, parseAddress } from '../../src/config.ts';

describe('loadConfig', () => {
  test('defaults apply when neither flags nor environment say otherwise', () => {
    const cfg = loadConfig([], {});
    assert.ok(cfg);
    assert.equal(cfg.leaderElection, false);
    assert.equal(cfg.resyncSeconds, 300);
    assert.equal(cfg.concurrency, 16);
    assert.deepEqual(cfg.watchNamespaces, []);
    assert.equal(cfg.clusterId, undefined);
  });

  test('a bare boolean flag and --flag=true mean the same', () => {
    assert.equal(loadConfig(['--leader-elect'], {})?.leaderElection, true);
    assert.equal(loadConfig(['--leader-elect=true'], {})?.leaderElection, true);
    assert.equal(loadConfig(['--leader-elect=false'], { REGISTRAR_LEADER_ELECT: 'true' })?.leaderElection, false);
  });

  test('environment variables stand in for flags, and flags win over them', () => {
    const cfg = loadConfig(['--concurrency=3'], {
      REGISTRAR_CONCURRENCY: '9',
      REGISTRAR_WATCH_NAMESPACES: 'dev, prod',
      REGISTRAR_CLUSTER_ID: 'eu-1',
    });
    assert.equal(cfg?.concurrency, 3);
    assert.deepEqual(cfg?.watchNamespaces, ['dev', 'prod']);
    assert.equal(cfg?.clusterId, 'eu-1');
  });

  const bad: [string, string[], RegExp][] = [
    ['an unknown flag is refused with the usage', ['--nope=1'], /Unknown option.*usage/s],
    ['a log level outside pino’s is refused', ['--log-level=loud'], /--log-level: expected one of/],
    ['a non-numeric concurrency is refused', ['--concurrency=many'], /--concurrency: expected a whole number/],
    [
      'a renew deadline not shorter than the lease duration is refused',
      ['--lease-duration=10', '--renew-deadline=10'],
      /--renew-deadline must be shorter/,
    ],
    ['an invalid namespace name is refused', ['--watch-namespaces=Prod'], /not a valid namespace name/],
    ['a cluster id with a slash is refused', ['--cluster-id=a/b'], /--cluster-id/],
  ];
  for (const [name, argv, message] of bad) {
    test(name, () =>
      assert.throws(
        () => loadConfig(argv, {}),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      ),
    );
  }

  test('--help returns no config', () => assert.equal(loadConfig(['--help'], {}), undefined));
});

describe('parseAddress', () => {
  test('an empty host means every interface', () =>
    assert.deepEqual(parseAddress('metrics-address', ':8080'), { host: undefined, port: 8080 }));
  test('an IPv6 host loses its brackets', () => assert.deepEqual(parseAddress('metrics-address', '[::1]:9'), { host: '::1', port: 9 }));
  test('an address without a port is refused', () => assert.throws(() => parseAddress('metrics-address', 'localhost'), ConfigError));
});
