/**
 * What keeps a Node process alive: the resources its event loop still waits on, with where each
 * socket, server or child process leads. Used when a test process does not exit on its own.
 */

/** The fields of the handle objects Node keeps that say what a handle is. */
interface HandleLike {
  hasRef?: () => boolean;
  constructor?: { name?: string };
  fd?: number;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  pid?: number;
  spawnfile?: string;
  spawnargs?: string[];
  address?: () => unknown;
}

/** One line per open resource that keeps the event loop alive, with what can be told about it. */
export function describeOpenResources(): string {
  const lines = [`  resources: ${process.getActiveResourcesInfo().join(', ')}`];
  // Undocumented but long-standing: the handle objects themselves, which say where they lead.
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  for (const handle of handles as HandleLike[]) {
    if (handle.hasRef?.() === false) continue;
    if (handle.fd !== undefined && handle.fd >= 0 && handle.fd <= 2) continue; // stdio
    lines.push(`  ${describeHandle(handle)}`);
  }
  return lines.join('\n');
}

function describeHandle(h: HandleLike): string {
  const kind = h.constructor?.name ?? 'handle';
  if (h.pid !== undefined) return `${kind}: pid ${h.pid} ${[h.spawnfile, ...(h.spawnargs ?? []).slice(1)].join(' ').slice(0, 300)}`;
  if (h.remotePort !== undefined)
    return `${kind}: ${String(h.localAddress)}:${String(h.localPort)} -> ${String(h.remoteAddress)}:${h.remotePort}`;
  if (typeof h.address === 'function') return `${kind}: listening on ${JSON.stringify(h.address())}`;
  return kind;
}
