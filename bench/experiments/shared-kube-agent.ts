/**
 * Experiment, loaded into the operator with `node --import` by
 * `npm run bench -- --experiment=shared-kube-agent`: measures what the src/ fix proposed in
 * BENCHMARKS.md would gain, without changing src/.
 *
 * @kubernetes/client-node 2.0 builds a new undici Agent for every API request, so every status
 * patch, finalizer patch and event of the operator pays a fresh TLS handshake with a client
 * certificate (see bench/lib/kube-agent.ts). This shares one dispatcher per KubeConfig, as the
 * proposed fix in src/ would.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { shareDispatchers } from '../lib/kube-agent.ts';

shareDispatchers(KubeConfig.prototype);
