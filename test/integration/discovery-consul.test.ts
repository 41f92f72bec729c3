/**
 * The discovery client's Consul source and registrar against real Consul agents: the shared bed's
 * (CONSUL_HTTP_ADDR) for reads and registrations, and an agent of this file's own
 * (RestartableConsul) for outages. Entries are written by the operator's own Consul backend, so the
 * client is shown to read exactly what the operator writes. Every test uses its own service and
 * registry namespace names and removes what it registered.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';

import { ExponentialBackoff } from 'cockatiel';

import {
  consulRegistrar,
  ConsulRequestError,
  consulSource,
  DiscoveryClient,
  RegistrationConflictError,
  type ConsulRegistrarOptions,
  type ConsulSourceOptions,
  type Instance,
} from '../../packages/discovery/src/index.ts';
import { selfServiceId } from '../../packages/discovery/src/consul/registration.ts';
import type { AgentServiceRecord } from '../../src/registry/consul/client.ts';
import { decodeService } from '../../src/registry/consul/codec.ts';
import { ConsulRegistry } from '../../src/registry/consul/consul-registry.ts';
import type { EndpointHealthMark, Owner, RegistryEntry } from '../../src/registry/types.ts';
import { REPO_ROOT } from '../../testbed/provision.ts';
import { startAclConsulAgent } from '../support/consul-acl.ts';
import { RestartableConsul, waitFor } from '../support/faults.ts';
import { consulAgentEnv } from '../support/env.ts';
import { reconcileOnce } from '../support/reconcile.ts';

const { address: AGENT, token: TOKEN } = consulAgentEnv();
const TOKEN_OPTION = TOKEN !== undefined && TOKEN !== '' ? { token: TOKEN } : {};

/** Generous: the machine running the tests may be loaded. */
const DEADLINE_MS = 60_000;
/** TTL of the operator's heartbeat in these tests. */
const OPERATOR_TTL = 5;

// --- what each test opened, closed and removed at the end -------------------------------------

const clients: DiscoveryClient[] = [];
/** Operator backends with the scopes they wrote, deregistered at the end. */
const writers: { backend: ConsulRegistry; scopes: Fixture[] }[] = [];
/** Services this file registered on the shared agent by hand. */
const handMade: string[] = [];
const children: ChildProcess[] = [];

after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.allSettled(clients.map((c) => c.close()));
  for (const { backend, scopes } of writers) {
    for (const f of scopes) await sync(backend, f, []).catch(() => undefined);
    await backend.retainNamespaces(new Set(), 0).catch(() => undefined);
    await backend.close();
  }
  for (const id of handMade) await consul('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`).catch(() => undefined);
});

// --- fixtures --------------------------------------------------------------------------------

interface Fixture {
  readonly clusterId: string;
  /** Registry namespace. */
  readonly ns: string;
  readonly service: string;
  readonly owner: Owner;
}

function suffix(): string {
  return randomUUID().slice(0, 8);
}

/** A fresh registry namespace and service; `service` lets two fixtures share a service name. */
function fixture(service = `disc-${suffix()}`): Fixture {
  const clusterId = `c-${randomUUID()}`;
  return { clusterId, ns: `ns${suffix()}`, service, owner: { clusterId, namespace: 'prod', name: service } };
}

interface EntryOptions {
  readonly weight?: number;
  readonly tags?: Record<string, string>;
  readonly metadata?: Record<string, string>;
  readonly health?: EndpointHealthMark;
}

/** An endpoint as the operator would derive it from a ready pod. */
function entry(f: Fixture, address: string, o: EntryOptions = {}): RegistryEntry {
  return {
    registryNamespace: f.ns,
    k8sNamespace: f.owner.namespace,
    owner: f.owner,
    endpoint: {
      service: f.service,
      instanceId: `${address}:8080`,
      address,
      port: 8080,
      weight: o.weight ?? 1,
      tags: o.tags ?? {},
      metadata: o.metadata ?? {},
      source: `pod/prod/${f.service}-${address}`,
      ...(o.health !== undefined ? { health: o.health } : {}),
    },
  };
}

/** The operator's Consul backend on `address`, removed at the end. */
function operator(f: Fixture, o: { address?: string; serviceNameTemplate?: string } = {}): ConsulRegistry {
  const backend = new ConsulRegistry({
    address: o.address ?? AGENT,
    ...TOKEN_OPTION,
    clusterId: f.clusterId,
    serviceNameTemplate: o.serviceNameTemplate ?? '{service}',
    leaseTtlSeconds: OPERATOR_TTL,
    callTimeoutMs: 10_000,
  });
  if (o.address === undefined) writers.push({ backend, scopes: [f] });
  return backend;
}

/** One reconcile as the operator's controller does it: owned records, plan, apply. */
async function sync(backend: ConsulRegistry, f: Fixture, desired: RegistryEntry[]): Promise<void> {
  assert.deepEqual(await reconcileOnce(backend, f.owner, { registryNamespace: f.ns, service: f.service }, desired), []);
}

function client(source: Partial<ConsulSourceOptions> & { namespace: string }, registrar?: ConsulRegistrarOptions): DiscoveryClient {
  const c = new DiscoveryClient({
    source: consulSource({ address: AGENT, ...TOKEN_OPTION, ...source }),
    ...(registrar !== undefined ? { registrar: consulRegistrar(registrar) } : {}),
    initialReadTimeoutMs: 30_000,
  });
  clients.push(c);
  return c;
}

/** What a consumer sees of an instance, as plain data. */
function seen(instances: readonly Instance[]): unknown[] {
  return instances.map((i) => ({ id: i.id, address: i.address, port: i.port, weight: i.weight, tags: i.tags, metadata: i.metadata }));
}

function addresses(instances: readonly Instance[]): string[] {
  return instances.map((i) => i.address).sort();
}

/** Waits until the client lists exactly `want` (addresses) for `service`. */
async function clientShows(c: DiscoveryClient, service: string, want: string[]): Promise<void> {
  await waitFor(
    `${service} listing ${want.join(', ')}`,
    async () => (JSON.stringify(addresses(await c.instances(service))) === JSON.stringify([...want].sort()) ? true : undefined),
    DEADLINE_MS,
  );
}

// --- raw Consul reads ---------------------------------------------------------------------------

async function consul(method: 'GET' | 'PUT', path: string, body?: unknown, agent = AGENT): Promise<unknown> {
  const res = await fetch(`${agent}${path}`, {
    method,
    headers: TOKEN !== undefined && TOKEN !== '' ? { 'X-Consul-Token': TOKEN } : {},
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  if (!res.ok) throw Object.assign(new Error(`${method} ${path}: ${res.status} ${text}`), { status: res.status });
  return text === '' ? undefined : (JSON.parse(text) as unknown);
}

interface HealthEntry {
  readonly Service: {
    ID: string;
    Service: string;
    Address: string;
    Port: number;
    Tags: string[];
    Meta: Record<string, string>;
    Weights: { Passing: number; Warning: number };
  };
}

async function passing(name: string, agent = AGENT): Promise<HealthEntry[]> {
  return (await consul('GET', `/v1/health/service/${encodeURIComponent(name)}?passing=true`, undefined, agent)) as HealthEntry[];
}

async function agentService(id: string, agent = AGENT): Promise<AgentServiceRecord | undefined> {
  try {
    return (await consul('GET', `/v1/agent/service/${encodeURIComponent(id)}`, undefined, agent)) as AgentServiceRecord;
  } catch (err: unknown) {
    if ((err as { status?: number }).status === 404) return undefined;
    throw err;
  }
}

// --- tests ---------------------------------------------------------------------------------------

void describe('consulSource reads what the operator writes to Consul', () => {
  void it('lists the passing instances with weights, tags and metadata, and follows additions and removals', async () => {
    const f = fixture();
    const backend = operator(f);
    const a = entry(f, '10.61.0.1', { weight: 2, tags: { version: '1.0', zone: 'a' }, metadata: { team: 'core', 'a b': 'ü' } });
    const b = entry(f, '10.61.0.2', { weight: 5, tags: { zone: 'b' } });
    const drained = entry(f, '10.61.0.3', { weight: 0 });
    const failing = entry(f, '10.61.0.4', { health: { status: 'critical', output: 'HTTP GET /healthz: status 503, want 200-399' } });
    await sync(backend, f, [a, b, drained, failing]);

    const c = client({ namespace: f.ns });
    await clientShows(c, f.service, ['10.61.0.1', '10.61.0.2']);
    assert.deepEqual(seen(await c.instances(f.service)), [
      {
        id: '10.61.0.1:8080',
        address: '10.61.0.1',
        port: 8080,
        weight: 2,
        tags: { version: '1.0', zone: 'a' },
        metadata: { 'a b': 'ü', team: 'core' },
      },
      { id: '10.61.0.2:8080', address: '10.61.0.2', port: 8080, weight: 5, tags: { zone: 'b' }, metadata: {} },
    ]);
    assert.equal((await c.instances(f.service, { zone: 'b' })).length, 1, 'tag filters match the operator’s tags');
    assert.ok(c.staleness(f.service).inSync);

    // An addition and a removal arrive through the open blocking query (wait is 300 s here, so a
    // change seen well before that was pushed by Consul, not found by a later poll).
    const added = entry(f, '10.61.0.5', { tags: { zone: 'a' } });
    await sync(backend, f, [a, b, drained, failing, added]);
    await clientShows(c, f.service, ['10.61.0.1', '10.61.0.2', '10.61.0.5']);
    await sync(backend, f, [a, drained, failing, added]);
    await clientShows(c, f.service, ['10.61.0.1', '10.61.0.5']);

    // Raising the drained endpoint's weight puts it in rotation: it was left out for its weight alone.
    await sync(backend, f, [a, { ...drained, endpoint: { ...drained.endpoint, weight: 3 } }, failing, added]);
    await clientShows(c, f.service, ['10.61.0.1', '10.61.0.3', '10.61.0.5']);
  });

  void it('never returns the entries of another registry namespace, even under the same Consul name', async () => {
    const mine = fixture();
    const theirs = fixture(mine.service); // same service, other registry namespace: same Consul name under `{service}`
    const ours = operator(mine);
    const other = operator(theirs);
    await sync(other, theirs, [entry(theirs, '10.62.0.9'), entry(theirs, '10.62.0.8')]);
    await sync(ours, mine, [entry(mine, '10.62.0.1')]);
    await waitFor(
      'all three under one Consul name',
      async () => ((await passing(mine.service)).length === 3 ? true : undefined),
      DEADLINE_MS,
    );

    const c = client({ namespace: mine.ns });
    await clientShows(c, mine.service, ['10.62.0.1']);
    // A change of the other namespace wakes the same blocking query: still only ours.
    await sync(other, theirs, [entry(theirs, '10.62.0.9'), entry(theirs, '10.62.0.8'), entry(theirs, '10.62.0.7')]);
    await sync(ours, mine, [entry(mine, '10.62.0.1'), entry(mine, '10.62.0.2')]);
    await clientShows(c, mine.service, ['10.62.0.1', '10.62.0.2']);
    const theirsClient = client({ namespace: theirs.ns });
    await clientShows(theirsClient, theirs.service, ['10.62.0.7', '10.62.0.8', '10.62.0.9']);
  });

  void it('reads under the {namespace}-{service} template, one Consul name per registry namespace', async () => {
    const template = '{namespace}-{service}';
    const mine = fixture();
    const theirs = fixture(mine.service);
    const ours = operator(mine, { serviceNameTemplate: template });
    const other = operator(theirs, { serviceNameTemplate: template });
    await sync(ours, mine, [entry(mine, '10.63.0.1', { tags: { zone: 'a' } })]);
    await sync(other, theirs, [entry(theirs, '10.63.0.2')]);
    assert.equal((await passing(`${mine.ns}-${mine.service}`)).length, 1, 'the operator wrote under the rendered name');

    const c = client({ namespace: mine.ns, serviceName: template });
    await clientShows(c, mine.service, ['10.63.0.1']);
    assert.deepEqual((await c.instances(mine.service))[0]?.tags, { zone: 'a' });
    const plain = client({ namespace: mine.ns });
    await plain.ready(mine.service);
    assert.deepEqual(await plain.instances(mine.service), [], 'under the default template the same service is another Consul name');
  });
});

void describe('consulSource with ACLs', () => {
  void it('asks for the token on every call, so a rotated token is used without a restart', async () => {
    const agent = await startAclConsulAgent();
    const f = fixture();
    const backend = new ConsulRegistry({
      address: agent.address,
      token: agent.managementToken,
      clusterId: f.clusterId,
      leaseTtlSeconds: OPERATOR_TTL,
    });
    let c: DiscoveryClient | undefined;
    try {
      await sync(backend, f, [entry(f, '10.69.0.1')]);
      const readToken = await agent.createToken('service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }');
      let current: string = randomUUID(); // a token Consul does not know
      c = new DiscoveryClient({
        source: consulSource({
          address: agent.address,
          token: () => current,
          namespace: f.ns,
          backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }),
        }),
      });
      clients.push(c);
      const denied = await waitFor(
        'the read to be denied',
        async () => {
          const error: unknown = c!.staleness(f.service).lastError;
          return error instanceof ConsulRequestError ? error : undefined;
        },
        DEADLINE_MS,
      );
      assert.equal(denied.status, 403);
      assert.match(denied.message, /ACL/);
      assert.equal(c.staleness(f.service).loaded, false);

      current = readToken;
      await clientShows(c, f.service, ['10.69.0.1']);
    } finally {
      await c?.close();
      await sync(backend, f, []).catch(() => undefined);
      await backend.close();
      await agent.stop();
    }
  });
});

void describe('consulSource through an outage of its agent', () => {
  void it('keeps serving the last set while the agent is down, then catches up with an agent whose index went backwards', async () => {
    const agent = await RestartableConsul.start();
    const f = fixture();
    let backend = operator(f, { address: agent.address });
    let c: DiscoveryClient | undefined;
    try {
      // Many writes before the outage, so the restarted (empty) agent answers with lower indexes.
      for (let w = 1; w <= 25; w++) await sync(backend, f, [entry(f, '10.64.0.1', { weight: w }), entry(f, '10.64.0.2')]);

      c = new DiscoveryClient({
        source: consulSource({
          address: agent.address,
          namespace: f.ns,
          backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }),
        }),
        initialReadTimeoutMs: 30_000,
      });
      clients.push(c);
      await clientShows(c, f.service, ['10.64.0.1', '10.64.0.2']);
      const before = Number(c.staleness(f.service).revision);

      await backend.close();
      await agent.pause();
      await waitFor('the client to notice the outage', async () => (c!.staleness(f.service).inSync ? undefined : true), DEADLINE_MS);
      assert.deepEqual(addresses(await c.instances(f.service)), ['10.64.0.1', '10.64.0.2'], 'the last set is still served');
      assert.equal(c.staleness(f.service).loaded, true);
      assert.ok(c.staleness(f.service).lastError !== undefined, 'staleness says why');

      await agent.resume(); // state lost: the operator registers again
      backend = operator(f, { address: agent.address });
      await sync(backend, f, [entry(f, '10.64.0.1'), entry(f, '10.64.0.3')]);
      await clientShows(c, f.service, ['10.64.0.1', '10.64.0.3']);
      assert.equal(c.staleness(f.service).inSync, true);
      const after = Number(c.staleness(f.service).revision);
      assert.ok(after < before, `the index went backwards (${before} before the restart, ${after} after)`);

      // The watch now blocks on the new agent's index: a blocking query on the old, higher index
      // would sleep until `wait` (300 s) ran out and miss this.
      await sync(backend, f, [entry(f, '10.64.0.1'), entry(f, '10.64.0.3'), entry(f, '10.64.0.4')]);
      await clientShows(c, f.service, ['10.64.0.1', '10.64.0.3', '10.64.0.4']);
    } finally {
      await c?.close();
      await backend.close();
      await agent.close();
    }
  });

  void it('a registration is registered again when its agent restarts and forgets it', async () => {
    const agent = await RestartableConsul.start();
    const service = `self-${suffix()}`;
    const registrar = consulRegistrar({ address: agent.address, namespace: `ns${suffix()}`, ttlSeconds: 3 });
    const registration = await registrar.register({ service, address: '10.65.0.1', port: 9000 });
    try {
      await waitFor(
        'the registration passing',
        async () => ((await passing(service, agent.address)).length === 1 ? true : undefined),
        DEADLINE_MS,
      );
      await agent.pause();
      await agent.resume();
      assert.equal(await agentService(registration.id, agent.address), undefined, 'the restarted agent has forgotten it');
      await waitFor(
        'the registration passing again',
        async () => ((await passing(service, agent.address)).some((e) => e.Service.ID === registration.id) ? true : undefined),
        DEADLINE_MS,
      );
    } finally {
      await registration.close();
      await agent.close();
    }
  });
});

void describe('consulRegistrar registers a process outside Kubernetes', () => {
  void it('writes the operator’s Meta and tags under its own owner, stays passing, and is gone as soon as it is closed', async () => {
    const ns = `ns${suffix()}`;
    const service = `self-${suffix()}`;
    const c = client({ namespace: ns }, { address: AGENT, ...TOKEN_OPTION, namespace: ns, ttlSeconds: 3 });
    const registration = await c.register({
      service,
      address: '10.66.0.1',
      port: 9000,
      weight: 4,
      tags: { zone: 'x', version: '2' },
      metadata: { team: 'billing' },
    });
    handMade.push(registration.id);
    assert.match(registration.id, /^kr-self-/);

    const [listed] = await waitFor(
      'the registration in ?passing=true',
      async () => {
        const all = await passing(service);
        return all.length === 1 ? all : undefined;
      },
      DEADLINE_MS,
    );
    assert.equal(listed?.Service.ID, registration.id);
    assert.deepEqual(listed?.Service.Tags, ['version=2', 'zone=x']);
    assert.equal(listed?.Service.Weights.Passing, 4);
    const meta = listed?.Service.Meta ?? {};
    assert.equal(meta['kr-owner-cluster'], `process:${hostname()}`);
    assert.equal(meta['kr-owner-namespace'], ns);
    assert.equal(meta['kr-owner-name'], service);
    assert.equal(meta['kr-registry-namespace'], ns);
    assert.equal(meta['kr-service'], service);
    assert.equal(meta['kr-instance'], '10.66.0.1:9000');
    assert.equal(meta['kr-source'], `process:${hostname()}/${process.pid}`);
    assert.equal(meta['kr-tags'], '{"version":"2","zone":"x"}');
    assert.equal(meta['kr-metadata'], '{"team":"billing"}');

    // The operator reads it as somebody else's entry, which it never writes or deletes.
    const record = await agentService(registration.id);
    assert.ok(record !== undefined);
    assert.equal(decodeService({ ...record, Meta: record.Meta ?? {} }, { registryNamespace: ns, service }, false)?.managed, false);

    // Consumers see it like any endpoint.
    await clientShows(c, service, ['10.66.0.1']);
    assert.deepEqual(seen(await c.instances(service)), [
      {
        id: '10.66.0.1:9000',
        address: '10.66.0.1',
        port: 9000,
        weight: 4,
        tags: { version: '2', zone: 'x' },
        metadata: { team: 'billing' },
      },
    ]);

    // Twice the TTL: only the registration's own passes keep it in.
    await sleep(6_000);
    assert.equal((await passing(service)).length, 1, 'still passing after twice its TTL');

    await registration.close();
    assert.deepEqual(await passing(service), [], 'gone from ?passing=true as soon as close() resolves');
    assert.equal(await agentService(registration.id), undefined, 'deregistered, not merely failing');
    await registration.close(); // idempotent
    await clientShows(c, service, []);
  });

  void it('the entry of a process killed with SIGKILL leaves ?passing=true within its TTL', async () => {
    const ns = `ns${suffix()}`;
    const service = `self-${suffix()}`;
    const ttl = 3;
    const index = join(REPO_ROOT, 'packages/discovery/src/index.ts');
    const script = [
      `import { consulRegistrar } from ${JSON.stringify(index)};`,
      `const registrar = consulRegistrar({ address: process.env.AGENT, token: process.env.TOKEN, namespace: process.env.NS, ttlSeconds: ${ttl} });`,
      `const registration = await registrar.register({ service: process.env.SERVICE, address: '10.67.0.1', port: 9000 });`,
      `console.log('registered ' + registration.id);`,
      'setInterval(() => {}, 60_000);',
    ].join('\n');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, AGENT, TOKEN: TOKEN ?? '', NS: ns, SERVICE: service },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const id = await waitFor(
      'the child to register',
      async () => {
        if (child.exitCode !== null) throw new Error(`the child exited: ${output}`);
        return /registered (\S+)/.exec(output)?.[1];
      },
      DEADLINE_MS,
    );
    handMade.push(id);
    await waitFor('the child’s entry passing', async () => ((await passing(service)).length === 1 ? true : undefined), DEADLINE_MS);
    // Two TTLs with the child alive: its own passes keep it in.
    await sleep(2 * ttl * 1000);
    assert.equal((await passing(service)).length, 1);

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    // TTL plus generous slack for a loaded machine; the point is that it goes without anyone deregistering it.
    await waitFor(
      'the killed child’s entry to leave ?passing=true',
      async () => ((await passing(service)).length === 0 ? true : undefined),
      ttl * 1000 + DEADLINE_MS,
    );
    assert.notEqual(await agentService(id), undefined, 'still registered (critical): it left through its TTL, not a deregistration');
  });

  void it('refuses to take a service id or an endpoint that someone else registered, and leaves theirs untouched', async () => {
    const ns = `ns${suffix()}`;
    const service = `self-${suffix()}`;
    const registrar = consulRegistrar({ address: AGENT, ...TOKEN_OPTION, namespace: ns, ttlSeconds: 3 });

    // Someone else's service at the very id this process would use.
    const id = selfServiceId(hostname(), ns, service, '10.68.0.1:9000');
    const foreign = {
      ID: id,
      Name: service,
      Address: '10.68.0.1',
      Port: 9000,
      Meta: { 'kr-owner-cluster': 'another-cluster-uid', owner: 'them' },
    };
    await consul('PUT', '/v1/agent/service/register', foreign);
    handMade.push(id);
    await assert.rejects(registrar.register({ service, address: '10.68.0.1', port: 9000, tags: { mine: 'yes' } }), (err: unknown) => {
      assert.ok(err instanceof RegistrationConflictError);
      assert.match(err.message, /another-cluster-uid/);
      return true;
    });
    const after = await agentService(id);
    assert.deepEqual([after?.Meta, after?.Tags], [foreign.Meta, []], 'the foreign service is unchanged');

    // The operator's endpoint under another id, at the same name, address and port.
    const f: Fixture = { ...fixture(service), ns };
    const backend = operator(f);
    await sync(backend, f, [entry(f, '10.68.0.2')]);
    await assert.rejects(registrar.register({ service, address: '10.68.0.2', port: 8080 }), RegistrationConflictError);
    const listed = (await passing(service)).filter((e) => e.Service.Address === '10.68.0.2');
    assert.deepEqual(
      listed.map((e) => e.Service.Meta['kr-owner-cluster']),
      [f.clusterId],
      'only the operator’s entry, still its own',
    );
  });
});
