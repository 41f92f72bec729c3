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
 * index. The requests and watches themselves go through transport.ts, over KubeConfig's
 * authentication and TLS material.
 *
 * client-node's modules also import undici, for the fetch of its generated clients and Watch and
 * for the dispatchers KubeConfig builds for them; the operator uses none of that, and undici's code
 * is about 15 MB of memory once in use. The same hook hands those modules a stand-in that loads
 * undici only when one of its exports is first used, so a generated client over this KubeConfig
 * (tests build them) still works.
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

/** Where client-node's modules live; their imports of undici get {@link UNDICI_ON_DEMAND}. */
const CLIENT_NODE_DIR = new URL('./', import.meta.resolve('@kubernetes/client-node/dist/config.js')).href;

/**
 * undici's exports that client-node's modules import, each loading undici (synchronously, it is
 * CommonJS) on first use: `new Agent(…)` returns undici's Agent, `fetch(…)` calls undici's.
 */
const UNDICI_ON_DEMAND = `data:text/javascript,${encodeURIComponent(
  [
    `import { createRequire } from 'node:module';`,
    `const load = () => createRequire(${JSON.stringify(CLIENT_NODE_DIR)})('undici');`,
    `export class Agent { constructor(...a) { return new (load().Agent)(...a); } }`,
    `export class ProxyAgent { constructor(...a) { return new (load().ProxyAgent)(...a); } }`,
    `export function fetch(...a) { return load().fetch(...a); }`,
  ].join('\n'),
)}`;

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === GENERATED_INDEX && context.parentURL?.endsWith(CONFIG_URL_SUFFIX)) return { url: SLIM_INDEX, shortCircuit: true };
    if (specifier === 'undici' && context.parentURL?.startsWith(CLIENT_NODE_DIR)) return { url: UNDICI_ON_DEMAND, shortCircuit: true };
    return nextResolve(specifier, context);
  },
});

// Imported only now, so that the hook above is in place when config.js's imports are resolved.
const config: typeof ConfigModule = await import('@kubernetes/client-node/dist/config.js');

/** client-node's KubeConfig (see the module comment for how it is loaded). */
export const KubeConfig = config.KubeConfig;
/** An instance of client-node's KubeConfig. */
export type KubeConfig = ConfigModule.KubeConfig;
