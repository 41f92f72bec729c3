/**
 * The ZooKeeper adapter's fixes to node-zookeeper-client that a standalone server cannot exercise:
 * unknown error codes (SESSION_MOVED needs an ensemble), the reconnect fence and detach as seen on
 * the wire, and the transaction builder's lost version 0. Behaviour against a real server is in
 * test/integration/zookeeper-session.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import zookeeper from 'node-zookeeper-client';
import { WriteFence } from '../../src/registry/fence.ts';
import { digestAcl, digestId, parseDigestCredentials } from '../../src/registry/zookeeper/acl.ts';
import { ZooKeeperSession, type ZooKeeperSessionOptions, type ZooKeeperSessionState } from '../../src/registry/zookeeper/client.ts';
import {
  hasZooKeeperCode,
  ZooKeeperError,
  ZooKeeperMultiError,
  ZooKeeperOperationError,
  ZooKeeperSessionEndedError,
  zooKeeperCodeName,
} from '../../src/registry/zookeeper/errors.ts';
import { EXCEPTION_MODULE, type TransactionWithOps } from '../../src/registry/zookeeper/internals.ts';
import { addOps, readResults, type ZooKeeperOp } from '../../src/registry/zookeeper/transaction.ts';
import { installTolerantExceptionFactory } from '../../src/registry/zookeeper/unknown-codes.ts';
import { ZooKeeperWireStub } from '../support/zookeeper-wire-stub.ts';

const SESSION_MOVED = -118;
const NO_NODE = -101;
const CLOSE_SESSION = -11;

function options(stub: ZooKeeperWireStub, more: Partial<ZooKeeperSessionOptions> = {}): ZooKeeperSessionOptions {
  return { connectString: stub.connectString, sessionTimeoutMs: 10_000, callTimeoutMs: 10_000, spinDelayMs: 50, ...more };
}

/** Resolves when the session reaches `state` (at once if it is there). */
function untilState(session: ZooKeeperSession, state: ZooKeeperSessionState, timeoutMs = 20_000): Promise<void> {
  if (session.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`session never reached ${state} (it is ${session.state})`));
    }, timeoutMs);
    const stop = session.onStateChange((s) => {
      if (s !== state) return;
      clearTimeout(timer);
      stop();
      resolve();
    });
  });
}

describe('unknown ZooKeeper error codes', () => {
  test('kill a process that uses node-zookeeper-client as published, when a server answers SESSION_MOVED', async () => {
    const stub = await ZooKeeperWireStub.start(() => SESSION_MOVED);
    try {
      const script = [
        "import zookeeper from 'node-zookeeper-client';",
        'const client = zookeeper.createClient(process.env.ZK, { retries: 0 });',
        "client.once('connected', () => client.exists('/x', (error) => { console.log('answered', String(error)); process.exit(0); }));",
        'client.connect();',
      ].join('\n');
      const outcome = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = execFile(
          process.execPath,
          ['--input-type=module', '-e', script],
          { env: { ...process.env, ZK: stub.connectString }, timeout: 60_000 },
          (error, _stdout, stderr) => resolve({ code: error === null ? 0 : (child.exitCode ?? -1), stderr }),
        );
      });
      assert.notEqual(outcome.code, 0, 'the process died');
      assert.match(outcome.stderr, /Unknown code: -118/);
    } finally {
      await stub.close();
    }
  });

  test('fail only the request through the adapter, with a typed SESSION_MOVED error, and the session keeps working', async () => {
    const stub = await ZooKeeperWireStub.start((_type, n) => (n === 0 ? SESSION_MOVED : NO_NODE));
    const session = await ZooKeeperSession.connect(options(stub));
    try {
      await assert.rejects(session.exists('/x'), (err: unknown) => {
        assert.ok(err instanceof ZooKeeperOperationError);
        assert.equal(err.codeName, 'SESSION_MOVED');
        assert.match(err.message, /another client has taken over this session/);
        return true;
      });
      await assert.rejects(session.getData('/x'), (err: unknown) => hasZooKeeperCode(err, 'NO_NODE'));
      assert.equal(session.state, 'connected');
    } finally {
      await session.detach();
      await stub.close();
    }
  });

  test('become library Exceptions carrying the server code; known codes are built as before', () => {
    assert.equal(EXCEPTION_MODULE, zookeeper.Exception, 'the module patched is the one the client uses');
    installTolerantExceptionFactory();
    installTolerantExceptionFactory();
    const moved = EXCEPTION_MODULE.create(SESSION_MOVED);
    assert.ok(moved instanceof zookeeper.Exception);
    assert.ok((moved as unknown) instanceof Error);
    assert.equal(moved.getCode(), SESSION_MOVED);
    assert.equal(moved.getName(), 'SESSION_MOVED');
    const unheardOf = EXCEPTION_MODULE.create(-999, '/a');
    assert.equal(unheardOf.getCode(), -999);
    assert.equal(unheardOf.getName(), 'UNKNOWN');
    assert.equal(unheardOf.getPath(), '/a');
    const noNode = EXCEPTION_MODULE.create(NO_NODE, '/b');
    assert.equal(noNode.getName(), 'NO_NODE');
    assert.equal(noNode.getPath(), '/b');
  });
});

describe('leaving a session', () => {
  test('detach() drops the connection without CLOSE_SESSION and never reconnects; calls then fail as ended', async () => {
    const stub = await ZooKeeperWireStub.start(() => NO_NODE);
    const session = await ZooKeeperSession.connect(options(stub));
    await session.detach();
    assert.equal(session.state, 'detached');
    await assert.rejects(session.exists('/x'), ZooKeeperSessionEndedError);
    // With one server the library reconnects on the next tick after its socket closed, which is
    // before detach() resolved; a probe connecting after that is accepted after any such reconnect.
    const probe = await ZooKeeperSession.connect(options(stub));
    await probe.detach();
    assert.equal(stub.connections, 2, 'only the probe connected after the detach');
    assert.ok(!stub.requestTypes.includes(CLOSE_SESSION), 'no CLOSE_SESSION was sent');
    await stub.close();
  });

  test('close() sends CLOSE_SESSION', async () => {
    const stub = await ZooKeeperWireStub.start(() => NO_NODE);
    const session = await ZooKeeperSession.connect(options(stub));
    await session.close();
    assert.equal(session.state, 'closed');
    assert.deepEqual(stub.requestTypes, [CLOSE_SESSION]);
    await stub.close();
  });

  test('a session reconnects after a dropped connection while its fence is open, and detaches instead once it is closed', async () => {
    const stub = await ZooKeeperWireStub.start(() => NO_NODE);
    const fence = new WriteFence();
    const session = await ZooKeeperSession.connect(options(stub, { fence }));
    try {
      const states: ZooKeeperSessionState[] = [];
      session.onStateChange((s) => states.push(s));
      stub.dropConnections();
      await untilState(session, 'disconnected');
      await untilState(session, 'connected');
      assert.equal(stub.connections, 2);

      fence.close('leadership lost');
      stub.dropConnections();
      await untilState(session, 'detached');
      assert.equal(stub.connections, 2, 'the refused reconnect opened no socket');
      assert.deepEqual(states, ['disconnected', 'connected', 'disconnected', 'detached']);
      await assert.rejects(session.exists('/x'), /left to its successor/);
      await assert.rejects(session.create('/x', Buffer.from('')), /no longer writes/);
      await session.close();
      assert.ok(!stub.requestTypes.includes(CLOSE_SESSION), 'close() after the fence closed does not end the session');
    } finally {
      await session.detach();
      await stub.close();
    }
  });

  test('a session whose fence is already closed is never opened', async () => {
    const fence = new WriteFence();
    fence.close('not the leader');
    await assert.rejects(
      ZooKeeperSession.connect({ connectString: '127.0.0.1:1', sessionTimeoutMs: 2000, callTimeoutMs: 2000, fence }),
      /refused/,
    );
  });

  test('adopting needs a 16-hex-digit id and a 32-hex-digit password', async () => {
    await assert.rejects(
      ZooKeeperSession.connect({
        connectString: '127.0.0.1:1',
        sessionTimeoutMs: 2000,
        callTimeoutMs: 2000,
        adopt: { sessionId: '12', password: 'x' },
      }),
      (err: unknown) => err instanceof ZooKeeperError && /16 hex digits/.test(err.message),
    );
  });
});

describe('multi transactions', () => {
  const transaction = (): TransactionWithOps => zookeeper.createClient('127.0.0.1:1').transaction() as TransactionWithOps;

  test('keep version 0, which the library builder turns into -1 (any version)', () => {
    const raw = transaction();
    raw.check('/a', 0).setData('/a', Buffer.from('x'), 0).remove('/a', 0);
    assert.deepEqual(
      raw.ops.map((op) => op.version),
      [-1, -1, -1],
      'the bug this works around',
    );
    const tx = transaction();
    const ops: ZooKeeperOp[] = [
      { op: 'check', path: '/a', version: 0 },
      { op: 'setData', path: '/a', data: Buffer.from('x'), version: 0 },
      { op: 'remove', path: '/a', version: 0 },
      { op: 'remove', path: '/b', version: -1 },
      { op: 'check', path: '/c', version: 7 },
      { op: 'create', path: '/d', data: Buffer.from('y'), mode: 'ephemeral', acl: [digestAcl('dev:pw')] },
    ];
    addOps(tx, ops);
    assert.deepEqual(
      tx.ops.map((op) => op.version),
      [0, 0, 0, -1, 7, undefined],
    );
  });

  test('name the operation that failed', () => {
    const ops: ZooKeeperOp[] = [
      { op: 'create', path: '/a' },
      { op: 'setData', path: '/b', data: Buffer.from('x'), version: 3 },
      { op: 'remove', path: '/c', version: -1 },
    ];
    assert.throws(
      () =>
        readResults(ops, [
          { type: -1, err: 0 },
          { type: -1, err: -103 },
          { type: -1, err: -2 },
        ]),
      (err: unknown) => {
        assert.ok(err instanceof ZooKeeperMultiError);
        assert.equal(err.failedIndex, 1);
        assert.equal(err.codeName, 'BAD_VERSION');
        assert.equal(err.path, '/b');
        assert.match(err.message, /multi \(operation 1\) \/b failed with BAD_VERSION \(-103\): the node changed since it was read/);
        return true;
      },
    );
  });
});

describe('errors and credentials', () => {
  test('codes are named, including those the library does not know', () => {
    assert.equal(zooKeeperCodeName(-101), 'NO_NODE');
    assert.equal(zooKeeperCodeName(-118), 'SESSION_MOVED');
    assert.equal(zooKeeperCodeName(-127), 'THROTTLED_OP');
    assert.equal(zooKeeperCodeName(-4242), 'UNKNOWN');
    assert.match(new ZooKeeperOperationError('create', '/x', -4242).message, /UNKNOWN \(-4242\)/);
  });

  test('digest ids are user:base64(sha1(user:password)), split at the first colon', () => {
    // What `java -cp zookeeper.jar org.apache.zookeeper.server.auth.DigestAuthenticationProvider super:secret` prints (3.8.0).
    assert.equal(digestId('super:secret'), 'super:lK75jTNcA+U9vtVEw5vB51mj/w4=');
    assert.deepEqual(parseDigestCredentials('dev:pass:with:colons'), { user: 'dev', password: 'pass:with:colons' });
    assert.throws(() => parseDigestCredentials('no-colon'), /user:password/);
    assert.throws(() => parseDigestCredentials(':pw'), /non-empty user/);
  });
});

describe('reconnecting', () => {
  test('requests made while disconnected reach the server after the credentials, not before', async () => {
    const AUTH = 100;
    const GET_DATA = 4;
    const stub = await ZooKeeperWireStub.start(() => NO_NODE);
    const session = await ZooKeeperSession.connect(options(stub, { digestCredentials: ['dev:pw'] }));
    try {
      // A first round trip: the credentials sent on connect have reached the stub.
      await assert.rejects(session.getData('/x'), (err: unknown) => hasZooKeeperCode(err, 'NO_NODE'));
      stub.hold();
      stub.dropConnections();
      await untilState(session, 'disconnected');
      const read = session.getData('/x');
      for (let i = 0; stub.connections < 2; i++) {
        assert.ok(i < 2000, 'the client reconnected');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      stub.release();
      await assert.rejects(read, (err: unknown) => hasZooKeeperCode(err, 'NO_NODE'));
      assert.deepEqual(stub.requestTypes, [AUTH, GET_DATA, AUTH, GET_DATA], 'credentials on each connect, the held read after them');
    } finally {
      await session.detach();
      await stub.close();
    }
  });
});
