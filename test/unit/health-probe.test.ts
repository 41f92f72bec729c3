import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Server as GrpcServer, ServerCredentials, status as grpcStatus } from '@grpc/grpc-js';
import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';

import {
  decodeHealthCheckRequest,
  decodeHealthCheckResponse,
  encodeHealthCheckRequest,
  encodeHealthCheckResponse,
  healthCheckMethod,
  ServingStatus,
} from '../../src/health/grpc-health-codec.ts';
import type { HealthCheckRequest, HealthCheckResponse } from '../../src/health/grpc-health-codec.ts';
import { probe } from '../../src/health/probe.ts';
import { withDefaults } from '../../src/health/types.ts';
import type { HealthCheckSpec } from '../../src/health/types.ts';

const host = '127.0.0.1';
/** Short enough to keep the suite quick, long enough for a loopback answer on a busy machine. */
const timeoutMs = 500;

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

/** The HTTP server whose answer each test switches. */
let answer: Handler = (_request, response) => response.end();
let lastRequest: IncomingMessage | undefined;
let httpServer: HttpServer;
let httpPort: number;
/** Stands for "another host": a redirect must never reach it. */
let otherServer: HttpServer;
let otherPort: number;
let otherHits = 0;
let tcpServer: NetServer;
let tcpPort: number;
const tcpSockets = new Set<Socket>();
let grpcServer: GrpcServer;
let grpcPort: number;
/** A port nothing listens on. */
let closedPort: number;

/** gRPC health per service; a service missing here answers NOT_FOUND, like the reference server. */
const servingStatuses = new Map<string, number>([
  ['', ServingStatus.SERVING],
  ['payments', ServingStatus.NOT_SERVING],
]);

function listen(server: HttpServer | NetServer): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: HttpServer | NetServer): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function json(status: number, body: unknown): Handler {
  return (_request, response) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };
}

async function probeWith(spec: HealthCheckSpec, port = httpPort, options: { signal?: AbortSignal } = {}) {
  return probe({ address: host, port }, withDefaults(spec), { timeoutMs, ...options });
}

before(async () => {
  httpServer = createHttpServer((request, response) => {
    lastRequest = request;
    answer(request, response);
  });
  httpPort = await listen(httpServer);
  otherServer = createHttpServer((_request, response) => {
    otherHits++;
    response.end('{"status":"ok"}');
  });
  otherPort = await listen(otherServer);
  tcpServer = createTcpServer((socket) => {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
  });
  tcpPort = await listen(tcpServer);
  const spare = createTcpServer();
  closedPort = await listen(spare);
  await close(spare);

  grpcServer = new GrpcServer();
  grpcServer.register<HealthCheckRequest, HealthCheckResponse>(
    healthCheckMethod,
    (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
      if (call.request.service === 'never-answers') return;
      const status = servingStatuses.get(call.request.service);
      if (status === undefined) callback({ code: grpcStatus.NOT_FOUND, details: 'unknown service' });
      else callback(null, { status });
    },
    encodeHealthCheckResponse,
    decodeHealthCheckRequest,
    'unary',
  );
  grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${host}:0`, ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
  );
});

after(async () => {
  grpcServer.forceShutdown();
  for (const socket of tcpSockets) socket.destroy();
  await Promise.all([close(httpServer), close(otherServer), close(tcpServer)]);
});

describe('HTTP probe', () => {
  it('keeps the connection alive between probes, and retries once on a new one when the server had closed it', async () => {
    const sockets = new Set<Socket>();
    let requests = 0;
    answer = (request, response) => {
      requests++;
      sockets.add(request.socket);
      // The second request on a connection finds it closed, as when a server's idle timeout fires
      // just as a probe is sent.
      if (requests === 2) {
        request.socket.destroy();
        return;
      }
      json(200, { db: 'ok' })(request, response);
    };
    // Probes of one endpoint are an interval apart: the connection is back in the pool by then.
    const settled = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));
    const first = await probeWith({ http: { path: '/healthz' } });
    await settled();
    const second = await probeWith({ http: { path: '/healthz' } });
    assert.equal(first.healthy, true);
    assert.equal(second.healthy, true, second.message);
    assert.equal(requests, 3, 'the second probe was sent again');
    assert.equal(sockets.size, 2, 'on a new connection');
    await settled();
    const third = await probeWith({ http: { path: '/healthz' } });
    assert.equal(third.healthy, true);
    assert.equal(sockets.size, 2, 'which is kept alive for the next probe');
  });

  it('does not retry a failure on a new connection: an endpoint that drops every request is unhealthy', async () => {
    answer = (request) => request.socket.destroy();
    const result = await probeWith({ http: { path: '/healthz' } });
    assert.equal(result.healthy, false);
    assert.match(result.message, /socket hang up|ECONNRESET/);
  });

  it('is healthy when the endpoint answers 200', async () => {
    answer = json(200, { status: 'ok' });
    const result = await probeWith({ http: { path: '/healthz' } });
    assert.equal(result.healthy, true, result.message);
    assert.equal(result.message, 'status 200');
    assert.ok(result.durationMs >= 0);
  });

  it('sends the configured path and headers to the endpoint itself', async () => {
    answer = json(200, {});
    await probeWith({ http: { path: '/ready?full=1', headers: { 'x-probe': 'registrar' } } });
    assert.equal(lastRequest?.url, '/ready?full=1');
    assert.equal(lastRequest?.headers['x-probe'], 'registrar');
  });

  it('is unhealthy with the status in the message when the endpoint answers 503', async () => {
    answer = json(503, { status: 'down' });
    const result = await probeWith({ http: { path: '/healthz' } });
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'status 503, want 200-399');
  });

  it('judges the status against expectedStatuses, ranges included', async () => {
    answer = json(204, {});
    assert.equal((await probeWith({ http: { path: '/', expectedStatuses: ['200-203'] } })).healthy, false);
    assert.equal((await probeWith({ http: { path: '/', expectedStatuses: [200, '204'] } })).healthy, true);
    answer = json(503, {});
    assert.equal((await probeWith({ http: { path: '/', expectedStatuses: ['500-503'] } })).healthy, true);
  });

  it('probes the check port instead of the endpoint port when one is given', async () => {
    answer = json(200, {});
    const result = await probeWith({ http: { path: '/', port: httpPort } }, closedPort);
    assert.equal(result.healthy, true, result.message);
  });

  it('passes the business check when every expected body field matches', async () => {
    answer = json(200, { db: 'ok', deps: { redis: 'ok' }, replicas: 3 });
    const result = await probeWith({ http: { path: '/healthz', expectedJSON: { db: 'ok', 'deps.redis': 'ok', replicas: '3' } } });
    assert.equal(result.healthy, true, result.message);
  });

  it('fails the business check naming the field, its value and the wanted value', async () => {
    answer = json(200, { db: 'ok', redis: 'timeout' });
    const result = await probeWith({ http: { path: '/healthz', expectedJSON: { db: 'ok', redis: 'ok' } } });
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'redis is "timeout", want "ok"');
  });

  it('follows dotted paths into nested objects and names the full path when it fails', async () => {
    answer = json(200, { deps: { redis: { state: 'degraded' } } });
    const result = await probeWith({ http: { path: '/healthz', expectedJSON: { 'deps.redis.state': 'ok', 'deps.kafka': 'ok' } } });
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'deps.redis.state is "degraded", want "ok"; deps.kafka is missing, want "ok"');
  });

  it('fails the business check when the body is not JSON', async () => {
    answer = (_request, response) => response.end('all good');
    const result = await probeWith({ http: { path: '/healthz', expectedJSON: { db: 'ok' } } });
    assert.equal(result.healthy, false);
    assert.match(result.message, /^body is not JSON/);
  });

  it('counts an endpoint that never answers as a failure that says it timed out', async () => {
    answer = () => undefined;
    const result = await probeWith({ http: { path: '/hang' } });
    assert.equal(result.healthy, false);
    assert.equal(result.message, `timed out after ${timeoutMs} ms without an answer`);
    assert.equal(result.timedOut, true);
  });

  it('is unhealthy with the connection error when nothing listens on the port', async () => {
    const result = await probeWith({ http: { path: '/healthz' } }, closedPort);
    assert.equal(result.healthy, false);
    assert.match(result.message, /ECONNREFUSED/);
    assert.equal(result.timedOut, false);
  });

  it('never follows a redirect to another host and judges the 3xx itself', async () => {
    answer = (_request, response) => {
      response.writeHead(302, { location: `http://localhost:${otherPort}/healthz` });
      response.end();
    };
    const strict = await probeWith({ http: { path: '/healthz', expectedStatuses: [200] } });
    assert.equal(strict.healthy, false);
    assert.equal(strict.message, 'status 302, want 200');
    const lenient = await probeWith({ http: { path: '/healthz' } });
    assert.equal(lenient.healthy, true, 'a 302 is within the default 200-399');
    assert.equal(otherHits, 0, 'the probe must not reach the redirect target');
  });

  it('turns a cancellation by the caller into an unhealthy result instead of an error', async () => {
    answer = () => undefined;
    const controller = new AbortController();
    const pending = probeWith({ http: { path: '/hang' } }, httpPort, { signal: controller.signal });
    controller.abort();
    const result = await pending;
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'probe cancelled before it finished');
  });
});

describe('HTTPS probe', () => {
  let directory: string;
  let httpsServer: HttpServer | undefined;
  let httpsPort: number;

  before(async () => {
    directory = mkdtempSync(join(tmpdir(), 'health-probe-'));
    const [key, cert] = [join(directory, 'key.pem'), join(directory, 'cert.pem')];
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert],
      {
        stdio: 'ignore',
      },
    );
    httpsServer = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, json(200, { db: 'ok' }));
    httpsPort = await listen(httpsServer);
  });

  after(async () => {
    if (httpsServer) await close(httpsServer);
    rmSync(directory, { recursive: true, force: true });
  });

  it('refuses a self-signed certificate by default', async () => {
    const result = await probeWith({ http: { path: '/', scheme: 'https' } }, httpsPort);
    assert.equal(result.healthy, false);
    assert.match(result.message, /certificate/i);
  });

  it('accepts a self-signed certificate with insecureSkipVerify', async () => {
    const result = await probeWith(
      { http: { path: '/', scheme: 'https', insecureSkipVerify: true, expectedJSON: { db: 'ok' } } },
      httpsPort,
    );
    assert.equal(result.healthy, true, result.message);
  });
});

describe('TCP probe', () => {
  it('is healthy when the port accepts a connection', async () => {
    const result = await probeWith({ tcp: {} }, tcpPort);
    assert.equal(result.healthy, true, result.message);
  });

  it('is unhealthy with the connection error when nothing listens on the port', async () => {
    const result = await probeWith({ tcp: {} }, closedPort);
    assert.equal(result.healthy, false);
    assert.match(result.message, /ECONNREFUSED/);
  });
});

describe('gRPC probe', () => {
  it('is healthy when the server as a whole is SERVING', async () => {
    const result = await probeWith({ grpc: {} }, grpcPort);
    assert.equal(result.healthy, true, result.message);
    assert.equal(result.message, 'SERVING');
  });

  it('is unhealthy when the named service is NOT_SERVING', async () => {
    const result = await probeWith({ grpc: { service: 'payments' } }, grpcPort);
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'NOT_SERVING, want SERVING');
  });

  it('is unhealthy and says so when the server does not know the service', async () => {
    const result = await probeWith({ grpc: { service: 'billing' } }, grpcPort);
    assert.equal(result.healthy, false);
    assert.equal(result.message, 'health check of service "billing": the server does not know it (NOT_FOUND)');
  });

  it('counts a health service that never answers as a timeout', async () => {
    const result = await probeWith({ grpc: { service: 'never-answers' } }, grpcPort);
    assert.equal(result.healthy, false);
    assert.match(result.message, /timed out/);
  });

  it('is unhealthy when nothing listens on the port', async () => {
    const result = await probeWith({ grpc: {} }, closedPort);
    assert.equal(result.healthy, false);
    assert.match(result.message, /UNAVAILABLE/);
  });
});

describe('grpc.health.v1 codec', () => {
  it('round-trips requests and responses, writing default values as empty messages like protobuf does', () => {
    assert.deepEqual(encodeHealthCheckRequest({ service: '' }), Buffer.alloc(0));
    assert.deepEqual(encodeHealthCheckRequest({ service: 'a' }), Buffer.from([0x0a, 0x01, 0x61]));
    assert.deepEqual(encodeHealthCheckResponse({ status: ServingStatus.SERVING }), Buffer.from([0x08, 0x01]));
    assert.deepEqual(decodeHealthCheckRequest(encodeHealthCheckRequest({ service: 'x'.repeat(300) })), { service: 'x'.repeat(300) });
    assert.deepEqual(decodeHealthCheckResponse(Buffer.alloc(0)), { status: ServingStatus.UNKNOWN });
  });

  it('skips fields it does not know and refuses a truncated message', () => {
    // field 2 (string "zz"), then field 1 = NOT_SERVING
    assert.deepEqual(decodeHealthCheckResponse(Buffer.from([0x12, 0x02, 0x7a, 0x7a, 0x08, 0x02])), { status: ServingStatus.NOT_SERVING });
    assert.throws(() => decodeHealthCheckResponse(Buffer.from([0x12, 0x05, 0x7a])), /runs past the end/);
  });
});
