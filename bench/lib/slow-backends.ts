/**
 * The backends of the client's slow-backend benchmark, run as a child process so that their timers
 * do not share an event loop with the load generator: `count` HTTP servers on loopback that answer
 * after `baseMs` plus an exponential share of `jitterMs` on average, one of which can be told to
 * answer after `slowMs` instead. Protocol over IPC: the child sends `{ports}` once listening; the
 * parent sends `{slow: index | null}`.
 */
import { createServer, type Server } from 'node:http';

/** Settings passed on the command line as JSON. */
export interface SlowBackendSettings {
  readonly count: number;
  readonly baseMs: number;
  readonly jitterMs: number;
  readonly slowMs: number;
}

/** Messages from the parent. */
export interface SlowBackendCommand {
  readonly slow: number | null;
}

async function main(): Promise<void> {
  const settings = JSON.parse(process.argv[2] ?? '{}') as SlowBackendSettings;
  let slow: number | null = null;
  const servers: Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < settings.count; i++) {
    const server = createServer((req, res) => {
      const delay = i === slow ? settings.slowMs : settings.baseMs - settings.jitterMs * Math.log(1 - Math.random());
      const timer = setTimeout(() => res.end(String(i)), delay);
      req.on('close', () => {
        if (!res.writableEnded) clearTimeout(timer);
      });
    });
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    servers.push(server);
    ports.push(address.port);
  }
  process.on('message', (m: SlowBackendCommand) => {
    slow = m.slow;
  });
  process.on('disconnect', () => {
    for (const s of servers) s.closeAllConnections();
    for (const s of servers) s.close();
  });
  process.send?.({ ports });
}

await main();
