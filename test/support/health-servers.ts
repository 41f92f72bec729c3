/**
 * Real health endpoints on loopback for the health-check tests: an HTTP service whose health
 * answer the test changes (healthy, a dependency down in the JSON body, a bad status, no answer),
 * a TCP listener that can close and reopen on its port, and a gRPC server speaking the standard
 * grpc.health.v1 protocol whose serving status the test flips. Each counts what it answered, so a
 * test can prove how many probes it took to eject or re-admit an endpoint.
 */
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { Server as GrpcServer, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import {
  decodeHealthCheckRequest,
  encodeHealthCheckResponse,
  healthCheckMethod,
  ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../../src/health/grpc-health-codec.ts';

const HOST = '127.0.0.1';

function listen(server: HttpServer | NetServer, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => resolve((server.address() as AddressInfo).port));
  });
}

/** What an HTTP health endpoint answers on /healthz. */
export type HttpHealthMode = 'ok' | 'redis-down' | 'status-503' | 'hang';

/** An HTTP service answering `GET /healthz` as `mode` says. */
export class HttpHealthServer {
  mode: HttpHealthMode = 'ok';
  /** Answers by mode since the last `reset()` ('hang' counts requests left unanswered). */
  readonly answered = new Map<HttpHealthMode, number>();
  readonly #server: HttpServer;
  readonly #hanging = new Set<ServerResponse>();
  port = 0;

  private constructor() {
    this.#server = createHttpServer((request, response) => {
      const mode = this.mode;
      this.answered.set(mode, (this.answered.get(mode) ?? 0) + 1);
      if (request.url !== '/healthz') {
        response.writeHead(404).end();
        return;
      }
      if (mode === 'hang') {
        this.#hanging.add(response);
        response.on('close', () => this.#hanging.delete(response));
        return;
      }
      const body =
        mode === 'redis-down'
          ? { db: 'ok', redis: 'timeout' }
          : mode === 'status-503'
            ? { db: 'down', redis: 'ok' }
            : { db: 'ok', redis: 'ok' };
      response.writeHead(mode === 'status-503' ? 503 : 200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  }

  static async start(): Promise<HttpHealthServer> {
    const server = new HttpHealthServer();
    server.port = await listen(server.#server);
    return server;
  }

  /** Switches to `mode` and starts counting answers afresh. */
  set(mode: HttpHealthMode): void {
    this.mode = mode;
    this.answered.clear();
  }

  count(mode: HttpHealthMode): number {
    return this.answered.get(mode) ?? 0;
  }

  async close(): Promise<void> {
    for (const response of this.#hanging) response.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A TCP listener that accepts connections while open and refuses them once closed. */
export class TcpHealthServer {
  port = 0;
  #server: NetServer | undefined;
  readonly #sockets = new Set<Socket>();

  static async start(): Promise<TcpHealthServer> {
    const server = new TcpHealthServer();
    await server.open();
    return server;
  }

  /** Listens (again, on the same port once it had one). */
  async open(): Promise<void> {
    const server = createTcpServer((socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.end();
    });
    this.port = await listen(server, this.port);
    this.#server = server;
  }

  /** Stops listening: connects are refused. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A gRPC server with the standard health service; `serving` flips its overall status. */
export class GrpcHealthServer {
  serving = true;
  port = 0;
  /** Health checks answered so far. */
  calls = 0;
  readonly #server = new GrpcServer();

  static async start(): Promise<GrpcHealthServer> {
    const server = new GrpcHealthServer();
    server.#server.register<HealthCheckRequest, HealthCheckResponse>(
      healthCheckMethod,
      (_call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
        server.calls++;
        callback(null, { status: server.serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING });
      },
      encodeHealthCheckResponse,
      decodeHealthCheckRequest,
      'unary',
    );
    server.port = await new Promise<number>((resolve, reject) =>
      server.#server.bindAsync(`${HOST}:0`, ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
    );
    return server;
  }

  close(): void {
    this.#server.forceShutdown();
  }
}
