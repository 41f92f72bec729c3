/**
 * A bed for one benchmark: the test bed's servers (started by testbed/bed.ts), the CRDs, and the
 * harness's clients to the apiserver and the registry etcd, all stopped together.
 */
import { Etcd3 } from 'etcd3';
import { startBed, type Bed } from '../../testbed/bed.ts';
import { installCrds } from '../../test/support/kube.ts';
import { BenchKube } from './kube.ts';

/** A running bed with the harness's clients. */
export interface BenchBed {
  readonly bed: Bed;
  readonly kube: BenchKube;
  /** Client of the registry etcd. */
  readonly etcd: Etcd3;
}

/**
 * Starts a bed (with kube-controller-manager, the scheduler and kwok when `controlPlane`),
 * installs the CRDs, runs `work`, and stops everything whatever happens.
 */
export async function withBed<T>(log: (line: string) => void, work: (b: BenchBed) => Promise<T>, controlPlane = false): Promise<T> {
  const started = performance.now();
  const bed = await startBed({ log, controlPlane });
  let etcd: Etcd3 | undefined;
  try {
    const kube = new BenchKube(bed.kubeconfig);
    await installCrds(kube.kc);
    etcd = new Etcd3({ hosts: [bed.registryEtcd.clientUrl] });
    log(`bed up in ${((performance.now() - started) / 1000).toFixed(1)} s (${bed.dir})`);
    return await work({ bed, kube, etcd });
  } finally {
    etcd?.close();
    await bed.stop();
  }
}

/** Polls `check` every `everyMs` until it is true or `timeoutMs` passed; resolves whether it became true. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
