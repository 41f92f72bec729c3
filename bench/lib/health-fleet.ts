/**
 * A fleet of real HTTP health endpoints on loopback, served by the harness's own process, for the
 * health-check benchmark. Each endpoint has an address of its own (127.0.<i>.<j>; Linux routes all
 * of 127.0.0.0/8 to lo) and all share one port, because the operator always probes an endpoint's
 * own address:port. One listener per address, one request handler: it answers by the address the
 * request arrived on, so the benchmark can make single endpoints fail and recover, and it counts
 * and timestamps what each endpoint answered since its last change (the harness's view of the
 * probes, independent of the operator's metrics).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mapBounded } from './stats.ts';

/** The health path every endpoint serves. */
export const HEALTH_PATH = '/healthz';
/** What a healthy endpoint answers: its dependency is fine. */
const HEALTHY_BODY = JSON.stringify({ status: 'serving', db: 'ok', version: '1.0.0' });
/**
 * What a failing endpoint answers: still HTTP 200, only the body says the database is down, so
 * only the business check (expectedJSON) catches it.
 */
const FAILING_BODY = JSON.stringify({ status: 'serving', db: 'down', version: '1.0.0' });
/** Answer times kept per endpoint since its last change: enough for any threshold of the benchmark. */
const MAX_TIMES = 16;

/** One endpoint's state and what it answered since its last change. */
interface EndpointState {
  failing: boolean;
  /** performance.now() of each answer since the last change (the first MAX_TIMES). */
  readonly times: number[];
  answers: number;
}

/** How one endpoint answered since its last change. */
export interface AnswersSinceChange {
  readonly failing: boolean;
  /** Answers given in the current state. */
  readonly count: number;
  /** performance.now() of the n-th answer (1-based) in the current state; NaN if not given yet. */
  readonly at: (n: number) => number;
}

/** HTTP health endpoints on loopback addresses sharing one port. */
export class HealthFleet {
  /** Requests answered since start, all endpoints, any path. */
  requests = 0;
  readonly #servers: Server[] = [];
  readonly #endpoints: Map<string, EndpointState>;
  #port = 0;

  private constructor(addresses: readonly string[]) {
    this.#endpoints = new Map(addresses.map((a) => [a, { failing: false, times: [], answers: 0 }]));
  }

  /** The port every address listens on. */
  get port(): number {
    return this.#port;
  }

  /**
   * Listens on every address, all healthy. The port is the one the kernel gives the first address;
   * if another process holds it on one of the others, the whole fleet tries again with a new one.
   */
  static async start(addresses: readonly string[], attempts = 5): Promise<HealthFleet> {
    const [first, ...rest] = addresses;
    if (first === undefined) throw new Error('a health fleet needs at least one address');
    for (let attempt = 1; ; attempt++) {
      const fleet = new HealthFleet(addresses);
      try {
        fleet.#port = await fleet.#listen(first, 0);
        await mapBounded(rest, 64, (address) => fleet.#listen(address, fleet.#port));
        return fleet;
      } catch (err: unknown) {
        await fleet.close();
        if (attempt >= attempts || (err as { code?: unknown }).code !== 'EADDRINUSE')
          throw new Error(`could not serve ${addresses.length} health endpoints on loopback`, { cause: err });
      }
    }
  }

  /** Makes `address` answer healthy or failing from now on, and starts counting its answers afresh. */
  set(address: string, failing: boolean): void {
    const e = this.#endpoints.get(address);
    if (!e) throw new Error(`${address} is not an endpoint of this fleet`);
    e.failing = failing;
    e.times.length = 0;
    e.answers = 0;
  }

  /** What `address` answered since its last change. */
  answers(address: string): AnswersSinceChange {
    const e = this.#endpoints.get(address);
    if (!e) throw new Error(`${address} is not an endpoint of this fleet`);
    const times = [...e.times];
    return { failing: e.failing, count: e.answers, at: (n) => times[n - 1] ?? Number.NaN };
  }

  /** Stops every listener and drops open connections. */
  async close(): Promise<void> {
    await Promise.all(this.#servers.map(close));
  }

  #listen(address: string, port: number): Promise<number> {
    const server = createServer((req, res) => this.#answer(req, res));
    this.#servers.push(server);
    return listen(server, address, port);
  }

  #answer(req: IncomingMessage, res: ServerResponse): void {
    this.requests++;
    const e = this.#endpoints.get(req.socket.localAddress ?? '');
    if (!e || req.url !== HEALTH_PATH) {
      res.writeHead(404).end();
      return;
    }
    e.answers++;
    if (e.times.length < MAX_TIMES) e.times.push(performance.now());
    const body = e.failing ? FAILING_BODY : HEALTHY_BODY;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  }
}

function listen(server: Server, address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
