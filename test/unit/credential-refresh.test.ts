import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RegistrySpec, SecretReference } from '../../src/api/v1alpha1/types.ts';
import {
  backendFingerprint,
  decideBackend,
  secretDigest,
  SecretRefresher,
  specKeyOf,
  type BackendDecision,
  type HeldBackend,
  type SecretKey,
} from '../../src/registry/credentials.ts';
import { FakeClock } from '../support/fake-clock.ts';

const data = (o: Record<string, string>): Record<string, Buffer> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Buffer.from(v)]));

const etcdSpec = (secret = 'etcd-creds'): RegistrySpec =>
  ({
    type: 'etcd',
    default: false,
    namespace: '{namespace}',
    etcd: {
      endpoints: ['http://etcd:2379'],
      prefix: '/services',
      format: 'json',
      credentialsSecretRef: { name: secret, namespace: 'creds' },
    },
  }) as unknown as RegistrySpec;

describe('secret digests', () => {
  test('the same data in another key order has the same digest', () => {
    assert.equal(secretDigest(data({ username: 'u', password: 'p' })), secretDigest(data({ password: 'p', username: 'u' })));
  });
  test('a changed password changes the digest', () => {
    assert.notEqual(secretDigest(data({ username: 'u', password: 'p1' })), secretDigest(data({ username: 'u', password: 'p2' })));
  });
  test('bytes moved between a key and its value change the digest', () => {
    assert.notEqual(secretDigest(data({ ab: 'c' })), secretDigest(data({ a: 'bc' })));
  });
  test('an added key changes the digest', () => {
    assert.notEqual(secretDigest(data({ token: 't' })), secretDigest(data({ token: 't', extra: '' })));
  });
  test('the digest is a hex SHA-256 that does not contain the value', () => {
    const d = secretDigest(data({ password: 'hunter2' }));
    assert.match(d, /^[0-9a-f]{64}$/);
    assert.ok(!d.includes('hunter2'));
  });
  test('the fingerprint of a backend includes the digests of its Secrets', () => {
    const spec = etcdSpec();
    assert.notEqual(
      backendFingerprint('u', spec, { 'creds/etcd-creds': 'd1' }),
      backendFingerprint('u', spec, { 'creds/etcd-creds': 'd2' }),
    );
    assert.equal(backendFingerprint('u', spec, { a: '1', b: '2' }), backendFingerprint('u', spec, { b: '2', a: '1' }));
  });
});

describe('what the provider does with the backend it holds', () => {
  const uid = 'uid-1';
  const spec = etcdSpec();
  const key = 'creds/etcd-creds';
  const built: HeldBackend = { specKey: specKeyOf(uid, spec), digests: { [key]: 'd1' }, replacing: false, failed: undefined };
  const latest =
    (d: string | undefined) =>
    (k: SecretKey): string | undefined =>
      k === key ? d : undefined;
  const RETRY_MS = 30_000;
  const failedFor = (digest: string, atMs: number): HeldBackend['failed'] => ({
    fingerprint: backendFingerprint(uid, spec, { [key]: digest }),
    atMs,
  });
  const cases: {
    name: string;
    held: HeldBackend | undefined;
    wanted?: { uid: string; spec: RegistrySpec };
    latest: string | undefined;
    now?: number;
    want: BackendDecision;
  }[] = [
    { name: 'nothing held yet: build one', held: undefined, latest: undefined, want: 'build' },
    { name: 'same spec and same Secret data: reuse it', held: built, latest: 'd1', want: 'reuse' },
    { name: 'the Secret has not been re-read since the build: reuse it', held: built, latest: undefined, want: 'reuse' },
    { name: 'a build still reading its Secret: reuse (share) it', held: { ...built, digests: undefined }, latest: 'd2', want: 'reuse' },
    {
      name: 'the Secret data changed: rotate, keeping the old backend until the new one is built',
      held: built,
      latest: 'd2',
      want: 'rotate',
    },
    { name: 'a replacement is being built: wait for it', held: { ...built, replacing: true }, latest: 'd2', want: 'await-replacement' },
    {
      name: 'the spec changed: rebuild, whatever the Secret holds',
      held: built,
      wanted: { uid, spec: etcdSpec('other') },
      latest: 'd2',
      want: 'rebuild',
    },
    { name: 'the Registry was recreated (new uid): rebuild', held: built, wanted: { uid: 'uid-2', spec }, latest: 'd1', want: 'rebuild' },
    {
      name: 'the replacement with these credentials failed a moment ago: keep the old backend',
      held: { ...built, failed: failedFor('d2', 10_000) },
      latest: 'd2',
      now: 20_000,
      want: 'keep-old',
    },
    {
      name: 'the replacement with these credentials failed a retry interval ago: try again',
      held: { ...built, failed: failedFor('d2', 10_000) },
      latest: 'd2',
      now: 40_000,
      want: 'rotate',
    },
    {
      name: 'the Secret changed again after a failed replacement: try the new data at once',
      held: { ...built, failed: failedFor('d2', 10_000) },
      latest: 'd3',
      now: 11_000,
      want: 'rotate',
    },
    {
      name: 'the Secret went back to the data the backend was built from: reuse it',
      held: { ...built, failed: failedFor('d2', 10_000) },
      latest: 'd1',
      now: 11_000,
      want: 'reuse',
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(decideBackend(c.held, c.wanted ?? { uid, spec }, latest(c.latest), c.now ?? 0, RETRY_MS), c.want));
  }
});

/** A Secret store the refresher reads with `get`, counting reads; a read can be made to fail or to hang. */
class FakeSecrets {
  readonly values = new Map<SecretKey, Record<string, string>>();
  readonly failing = new Map<SecretKey, Error>();
  reads: SecretKey[] = [];
  #hold: Promise<void> | undefined;
  #release: (() => void) | undefined;
  read = async (ref: SecretReference): Promise<Record<string, Buffer>> => {
    const key = `${ref.namespace}/${ref.name}`;
    this.reads.push(key);
    if (this.#hold) await this.#hold;
    const err = this.failing.get(key);
    if (err) throw err;
    const v = this.values.get(key);
    if (!v) throw Object.assign(new Error(`secrets "${ref.name}" not found`), { code: 404 });
    return data(v);
  };
  hang(): void {
    this.#hold = new Promise((r) => (this.#release = r));
  }
  release(): void {
    this.#hold = undefined;
    this.#release?.();
  }
}

function refresher(
  clock: FakeClock,
  secrets: FakeSecrets,
  watched: SecretKey[],
): { r: SecretRefresher; rounds: (readonly SecretKey[])[]; errors: string[]; recovered: string[] } {
  const rounds: (readonly SecretKey[])[] = [];
  const errors: string[] = [];
  const recovered: string[] = [];
  const r = new SecretRefresher({
    intervalMs: 3000,
    clock,
    read: secrets.read,
    watched: () => watched,
    afterRound: (changed) => rounds.push(changed),
    onReadError: (key, err) => errors.push(`${key}: ${(err as Error).message}`),
    onReadRecovered: (key) => recovered.push(key),
  });
  // What the backend builds read.
  for (const key of watched) {
    const v = secrets.values.get(key);
    if (v) r.record(key, secretDigest(data(v)));
  }
  return { r, rounds, errors, recovered };
}

describe('re-reading the Secrets of live backends', () => {
  test('nothing is read before the interval; then every watched Secret is read once per round', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { password: 'p1' });
    secrets.values.set('creds/b', { token: 't1' });
    const { r, rounds } = refresher(clock, secrets, ['creds/a', 'creds/b', 'creds/a']);
    r.start();
    await clock.advance(2999);
    assert.deepEqual(secrets.reads, []);
    await clock.advance(1);
    assert.deepEqual(secrets.reads.sort(), ['creds/a', 'creds/b']);
    assert.deepEqual(rounds, [[]]);
    await clock.advance(3000);
    assert.equal(secrets.reads.length, 4);
    assert.deepEqual(rounds, [[], []]);
    await r.close();
  });

  test('changed data is reported once, in the round that sees it, and becomes the latest digest', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { username: 'u', password: 'p1' });
    const { r, rounds } = refresher(clock, secrets, ['creds/a']);
    r.start();
    await clock.advance(3000);
    secrets.values.set('creds/a', { username: 'u', password: 'p2' });
    await clock.advance(3000);
    await clock.advance(3000);
    assert.deepEqual(rounds, [[], ['creds/a'], []]);
    assert.equal(r.latest('creds/a'), secretDigest(data({ username: 'u', password: 'p2' })));
    await r.close();
  });

  test('a Secret that cannot be read keeps its last digest, its error is reported once, and its recovery too', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { token: 't1' });
    const { r, rounds, errors, recovered } = refresher(clock, secrets, ['creds/a']);
    const before = r.latest('creds/a');
    r.start();
    secrets.failing.set('creds/a', Object.assign(new Error('secrets "a" is forbidden'), { code: 403 }));
    await clock.advance(3000);
    await clock.advance(3000);
    assert.deepEqual(errors, ['creds/a: secrets "a" is forbidden']);
    assert.deepEqual(rounds, [[], []], 'an unreadable Secret is no change');
    assert.equal(r.latest('creds/a'), before);
    secrets.failing.delete('creds/a');
    secrets.values.set('creds/a', { token: 't2' });
    await clock.advance(3000);
    assert.deepEqual(recovered, ['creds/a']);
    assert.deepEqual(rounds.at(-1), ['creds/a']);
    await r.close();
  });

  test('a slow round delays the next one instead of overlapping it', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { token: 't1' });
    const { r, rounds } = refresher(clock, secrets, ['creds/a']);
    r.start();
    secrets.hang();
    await clock.advance(3000);
    await clock.advance(30_000);
    assert.equal(secrets.reads.length, 1, 'no second read while the first hangs');
    assert.equal(clock.pending, 0, 'no timer while a round is under way');
    secrets.release();
    await clock.advance(0);
    assert.deepEqual(rounds, [[]]);
    await clock.advance(3000);
    assert.equal(secrets.reads.length, 2);
    await r.close();
  });

  test('a refused registry call brings the next round forward to a second after the last one, and only once', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { token: 't1' });
    const { r } = refresher(clock, secrets, ['creds/a']);
    r.refreshSoon();
    assert.equal(clock.pending, 0, 'before start() there is nothing to bring forward');
    r.start();
    await clock.advance(3000); // round 1 ends at 3000
    await clock.advance(200);
    r.refreshSoon();
    r.refreshSoon();
    assert.equal(clock.pending, 1);
    await clock.advance(799); // 3999
    assert.equal(secrets.reads.length, 1);
    await clock.advance(1); // 4000
    assert.equal(secrets.reads.length, 2);
    await clock.advance(2999); // 6999: the regular pause counts from the round brought forward
    assert.equal(secrets.reads.length, 2);
    await clock.advance(1);
    assert.equal(secrets.reads.length, 3);
    await r.close();
    r.refreshSoon();
    assert.equal(clock.pending, 0, 'after close() nothing is scheduled');
  });

  test('a refused call long after the last round starts one at once, never later than the regular one', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { token: 't1' });
    const { r } = refresher(clock, secrets, ['creds/a']);
    r.start();
    await clock.advance(2500);
    r.refreshSoon(); // no round yet: due at once
    await clock.advance(0);
    assert.equal(secrets.reads.length, 1);
    await clock.advance(2999);
    r.refreshSoon(); // the last round ended 2999 ms ago: at once again
    await clock.advance(0);
    assert.equal(secrets.reads.length, 2);
    await r.close();
  });

  test('close() stops the timer: nothing is read after it, and a round under way reports nothing', async () => {
    const clock = new FakeClock();
    const secrets = new FakeSecrets();
    secrets.values.set('creds/a', { token: 't1' });
    const { r, rounds } = refresher(clock, secrets, ['creds/a']);
    r.start();
    await clock.advance(3000);
    secrets.hang();
    secrets.values.set('creds/a', { token: 't2' });
    await clock.advance(3000);
    const closing = r.close();
    secrets.release();
    await closing;
    assert.equal(clock.pending, 0, 'no timer left');
    await clock.advance(60_000);
    assert.equal(secrets.reads.length, 2);
    assert.deepEqual(rounds, [[]], 'the round cut short by close() reports nothing');
    r.start();
    assert.equal(clock.pending, 0, 'a closed refresher does not start again');
  });
});
