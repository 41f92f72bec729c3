/**
 * The parts of @kubernetes/client-node the operator runs on: KubeConfig (kubeconfig and in-cluster
 * loading, every auth provider, TLS material) and Watch, without its generated API.
 *
 * The package's root, and KubeConfig's own module, import the generated code of every API group:
 * about 15 MB of source for the API classes and 4 MB for the model classes, which V8 keeps as
 * strings for the life of the process, plus their compiled code. Importing it cost 67 MB of RSS
 * and a second of startup, for four resource types. KubeConfig only needs two small modules of it
 * (to build generated API clients in `makeApiClient`, which the operator does not call), so a
 * resolve hook hands config.js a module with just those two exports instead of the generated
 * index. The requests themselves go through {@link ./api.ts}, over KubeConfig's authentication
 * and connection pool, as client-node's Watch does.
 *
 * Every module of the operator takes KubeConfig from here, never from the package root; a root
 * import elsewhere in the same process (tests do) still gets the whole package, unchanged.
 * test/integration/kube-client.test.ts fails if client-node's layout moves under this.
 */
import { registerHooks } from 'node:module';
import type * as ConfigModule from '@kubernetes/client-node/dist/config.js';

/** The module client-node's config.js is, and the generated index it imports. */
const CONFIG_URL_SUFFIX = '/@kubernetes/client-node/dist/config.js';
const GENERATED_INDEX = './gen/index.js';

/** What config.js takes from the generated index, from the two modules that define it. */
const SLIM_INDEX = `data:text/javascript,${encodeURIComponent(
  [
    `export { createConfiguration } from ${JSON.stringify(import.meta.resolve('@kubernetes/client-node/dist/gen/configuration.js'))};`,
    `export { ServerConfiguration } from ${JSON.stringify(import.meta.resolve('@kubernetes/client-node/dist/gen/servers.js'))};`,
  ].join('\n'),
)}`;

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === GENERATED_INDEX && context.parentURL?.endsWith(CONFIG_URL_SUFFIX)) return { url: SLIM_INDEX, shortCircuit: true };
    return nextResolve(specifier, context);
  },
});

// Imported only now, so that the hook above is in place when config.js's imports are resolved.
const config: typeof ConfigModule = await import('@kubernetes/client-node/dist/config.js');

/** client-node's KubeConfig (see the module comment for how it is loaded). */
export const KubeConfig = config.KubeConfig;
/** An instance of client-node's KubeConfig. */
export type KubeConfig = ConfigModule.KubeConfig;
