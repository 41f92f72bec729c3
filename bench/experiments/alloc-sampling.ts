/**
 * Experiment (not shipped): samples the operator's allocations, garbage included, between its
 * "caches synced" and "first pass wrote entries in bulk" log lines (seen as they are written to
 * fd 1), and writes the sampling heap profile to /tmp/alloc-<pid>.heapprofile.
 *
 * A diagnostic rather than a proposed fix: it wraps fs.write and fs.writeSync of the operator
 * process to see its log lines. Open the profile in Chrome DevTools (Memory tab) or sum its
 * nodes' selfSize by function. Run:
 *   npm run bench -- --only=recovery --sizes=10000 --repeats=1 --no-markdown --experiment=alloc-sampling
 */
import fs from 'node:fs';
import { Session } from 'node:inspector';

const session = new Session();
session.connect();
session.post('HeapProfiler.enable');
let state: 'before' | 'sampling' | 'done' = 'before';
function look(data: unknown): void {
  if (state === 'done') return;
  const text = typeof data === 'string' ? data : Buffer.isBuffer(data) ? data.toString('utf8') : '';
  if (state === 'before' && text.includes('"caches synced"')) {
    state = 'sampling';
    session.post('HeapProfiler.startSampling', {
      samplingInterval: 8192,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  } else if (state === 'sampling' && text.includes('"first pass wrote entries in bulk"')) {
    state = 'done';
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) fs.writeFileSync(`/tmp/alloc-${process.pid}.heapprofile`, JSON.stringify(res.profile));
    });
  }
}
const writeSync = fs.writeSync;
const write = fs.write;
(fs as { writeSync: unknown }).writeSync = function (fd: number, data: unknown, ...rest: unknown[]) {
  if (fd === 1) look(data);
  return (writeSync as (...a: unknown[]) => number)(fd, data, ...rest);
};
(fs as { write: unknown }).write = function (fd: number, data: unknown, ...rest: unknown[]) {
  if (fd === 1) look(data);
  return (write as (...a: unknown[]) => void)(fd, data, ...rest);
};
