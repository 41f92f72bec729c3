import { connect } from 'node:net';

import type { ProbeVerdict } from './probe-verdict.ts';

/** Healthy when a TCP connection to host:port is accepted; the socket is closed right away. */
export function probeTcp(host: string, port: number, signal: AbortSignal): Promise<ProbeVerdict> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const onAbort = (): void => {
      socket.destroy();
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve({ healthy: true, message: `TCP connection to port ${port} accepted` });
    });
    socket.once('error', (error) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(error);
    });
  });
}
