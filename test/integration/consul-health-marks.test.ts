/**
 * Endpoints failing their active health check, against the real Consul agent of the test bed
 * (CONSUL_HTTP_ADDR, and CONSUL_HTTP_TOKEN when it has ACLs): they stay registered but critical with
 * the probe's output, read back with the same mark, turn passing again when they recover, and are
 * never reaped while the operator lives. Every test uses its own cluster id and service names.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';

import { calculatePlan, isEmptyPlan } from '../../src/plan/plan.ts';
import { healthCheckId, instanceServiceId } from '../../src/registry/consul/codec.ts';
import { ConsulRegistry } from '../../src/registry/consul/consul-registry.ts';
import type { ConsulRegistryOptions } from '../../src/registry/consul/consul-registry.ts';
import { OwnedRegistry } from '../../src/registry/owner.ts';
import type { EndpointHealthMark, Owner, RegistryEntry } from '../../src/registry/types.ts';
import { consulAgentEnv } from '../support/env.ts';
import { reconcileOnce } from '../support/reconcile.ts';

const { address: AGENT, token: TOKEN } = consulAgentEnv();

const TTL = 5;
/** Consul's minimum; the agent looks for services to reap every 30 s. */
const REAP_AFTER = 60;
const registries: ConsulRegistry[] = [];
after(async () => {
  await Promise.all(registries.map((r) => r.close()));
});

function registry(options: Partial<ConsulRegistryOptions> & { clusterId: string }): ConsulRegistry {
  const r = new ConsulRegistry({
    address: AGENT,
    ...(TOKEN !== undefined ? { token: TOKEN } : {}),
    serviceNameTemplate: '{namespace}-{service}',
    leaseTtlSeconds: TTL,
    deregisterCriticalAfterSeconds: REAP_AFTER,
    callTimeoutMs: 5000,
    ...options,
  });
  registries.push(r);
  return r;
}

interface Fixture {
  readonly clusterId: string;
  readonly ns: string;
  readonly service: string;
  /** Consul name under the `{namespace}-{service}` template. */
  readonly name: string;
  readonly owner: Owner;
}

function fixture(): Fixture {
  const s = randomUUID().slice(0, 8);
  const ns = `hm${s}`;
  const service = `probed-${s}`;
  const clusterId = `c-${randomUUID()}`;
  return { clusterId, ns, service, name: `${ns}-${service}`, owner: { clusterId, namespace: 'prod', name: service } };
}

function entry(f: Fixture, address: string, health?: EndpointHealthMark): RegistryEntry {
  return {
    registryNamespace: f.ns,
    k8sNamespace: 'prod',
    owner: f.owner,
    endpoint: {
      service: f.service,
      instanceId: `${address}:8080`,
      address,
      port: 8080,
      weight: 2,
      tags: { zone: 'a' },
      metadata: { team: 'core' },
      source: `static/prod/${f.service}/${address}`,
      ...(health !== undefined ? { health } : {}),
    },
  };
}

function serviceId(f: Fixture, address: string): string {
  return instanceServiceId(f.clusterId, f.ns, f.service, `${address}:8080`);
}

function failing(output: string): EndpointHealthMark {
  return { status: 'critical', output };
}

async function records(backend: ConsulRegistry, f: Fixture): Promise<RegistryEntry[]> {
  return new OwnedRegistry(backend, f.owner).records({ registryNamespace: f.ns, service: f.service });
}

/** One reconcile as the controller does it: owned records → plan → apply. */
async function sync(backend: ConsulRegistry, f: Fixture, desired: RegistryEntry[]): Promise<void> {
  assert.deepEqual(await reconcileOnce(backend, f.owner, { registryNamespace: f.ns, service: f.service }, desired), []);
}

async function consul<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = TOKEN !== undefined ? { 'X-Consul-Token': TOKEN } : {};
  const res = await fetch(`${AGENT}${path}`, { ...init, headers, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${text}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

interface HealthCheck {
  readonly CheckID: string;
  readonly ServiceID: string;
  readonly Status: string;
  readonly Notes: string;
  readonly Output: string;
}

interface HealthEntry {
  readonly Service: { ID: string; Address: string; Meta: Record<string, string> };
  readonly Checks: HealthCheck[];
}

function passing(name: string): Promise<HealthEntry[]> {
  return consul<HealthEntry[]>(`/v1/health/service/${encodeURIComponent(name)}?passing=true`);
}

function everything(name: string): Promise<HealthEntry[]> {
  return consul<HealthEntry[]>(`/v1/health/service/${encodeURIComponent(name)}`);
}

/** The catalog's checks of every instance of a service. */
function catalogChecks(name: string): Promise<HealthCheck[]> {
  return consul<HealthCheck[]>(`/v1/health/checks/${encodeURIComponent(name)}`);
}

/** The agent's own view of one check (authoritative, and not subject to catalog sync delays). */
async function agentCheck(checkId: string): Promise<HealthCheck | undefined> {
  const all = await consul<Record<string, HealthCheck>>(
    `/v1/agent/checks?filter=${encodeURIComponent(`CheckID == ${JSON.stringify(checkId)}`)}`,
  );
  return all[checkId];
}

async function agentServiceIds(name: string): Promise<string[]> {
  const all = await consul<Record<string, { ID: string }>>(
    `/v1/agent/services?filter=${encodeURIComponent(`Service == ${JSON.stringify(name)}`)}`,
  );
  return Object.values(all)
    .map((s) => s.ID)
    .sort();
}

function addresses(entries: readonly HealthEntry[]): string[] {
  return entries.map((e) => e.Service.Address).sort();
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

void describe('ConsulRegistry: endpoints failing their health check, against a real Consul agent', () => {
  void it('a failing endpoint stays registered, critical with the probe output, out of ?passing=true, and reads back unchanged', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const output = 'HTTP GET http://10.40.0.2:8080/healthz: status 503, want 200-399';
    const desired = [entry(f, '10.40.0.1'), entry(f, '10.40.0.2', failing(output))];
    const failingId = serviceId(f, '10.40.0.2');
    const checkId = healthCheckId(failingId);
    await sync(backend, f, desired);

    // (a) listed by the agent, like the healthy one.
    assert.deepEqual(await agentServiceIds(f.name), [serviceId(f, '10.40.0.1'), failingId].sort());
    // (b) in the catalog but not among the passing instances, with a critical check that says why.
    await waitFor(
      'the failing instance in the catalog with its critical health check',
      async () => (await everything(f.name)).some((e) => e.Checks.some((c) => c.CheckID === checkId && c.Status === 'critical')),
      10_000,
    );
    assert.deepEqual(addresses(await everything(f.name)), ['10.40.0.1', '10.40.0.2']);
    assert.deepEqual(addresses(await passing(f.name)), ['10.40.0.1']);
    const inCatalog = (await catalogChecks(f.name)).find((c) => c.CheckID === checkId);
    assert.equal(inCatalog?.ServiceID, failingId);
    assert.equal(inCatalog?.Status, 'critical');
    assert.equal(inCatalog?.Notes, output, 'the catalog (API and UI) shows the probe output in the check Notes at once');
    // Output: the agent holds it at once; the catalog gets an output-only change within check_update_interval.
    const onAgent = await agentCheck(checkId);
    assert.equal(onAgent?.Status, 'critical');
    assert.equal(onAgent?.Output, output);
    const meta = (await everything(f.name)).find((e) => e.Service.ID === failingId)?.Service.Meta ?? {};
    assert.equal(meta['kr-health'], 'critical');
    assert.equal(meta['kr-health-output'], output);

    // (c) read back with the same mark: nothing to rewrite, nothing to plan.
    const current = await records(backend, f);
    assert.deepEqual(current.find((e) => e.endpoint.address === '10.40.0.2')?.endpoint.health, failing(output));
    assert.equal(
      current.some((e) => e.needsRewrite === true),
      false,
    );
    assert.ok(isEmptyPlan(calculatePlan({ current, desired, owner: f.owner, policy: 'sync' })));
    // Nor is it dead or foreign to the garbage collector's listing.
    const owned = await backend.ownedByCluster();
    assert.deepEqual(owned.find((e) => e.endpoint.address === '10.40.0.2')?.endpoint.health, failing(output));
  });

  void it('a new probe output replaces the old one, and a recovered endpoint turns passing and loses the extra check', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const id = serviceId(f, '10.41.0.1');
    const checkId = healthCheckId(id);
    await sync(backend, f, [entry(f, '10.41.0.1', failing('status 503'))]);
    assert.equal((await agentCheck(checkId))?.Output, 'status 503');

    const next = [entry(f, '10.41.0.1', failing('dial tcp 10.41.0.1:8080: connect: connection refused'))];
    await sync(backend, f, next);
    const onAgent = await agentCheck(checkId);
    assert.equal(onAgent?.Status, 'critical');
    assert.equal(onAgent?.Output, 'dial tcp 10.41.0.1:8080: connect: connection refused');
    await waitFor(
      'the new output in the catalog',
      async () =>
        (await catalogChecks(f.name)).some(
          (c) => c.CheckID === checkId && c.Notes === 'dial tcp 10.41.0.1:8080: connect: connection refused',
        ),
      10_000,
    );
    assert.ok(isEmptyPlan(calculatePlan({ current: await records(backend, f), desired: next, owner: f.owner, policy: 'sync' })));

    // (d) recovered: the same service, passing, without the health check or its Meta.
    const healthy = [entry(f, '10.41.0.1')];
    await sync(backend, f, healthy);
    await waitFor('the recovered instance among the passing ones', async () => (await passing(f.name)).length === 1, 10_000);
    assert.equal(await agentCheck(checkId), undefined, 'the health check is gone from the agent');
    assert.equal(
      (await catalogChecks(f.name)).some((c) => c.CheckID === checkId),
      false,
    );
    const meta = (await passing(f.name))[0]?.Service.Meta ?? {};
    assert.equal(meta['kr-health'], undefined);
    assert.equal(meta['kr-health-output'], undefined);
    assert.deepEqual(await agentServiceIds(f.name), [id], 'updated in place, never deregistered');
    assert.ok(isEmptyPlan(calculatePlan({ current: await records(backend, f), desired: healthy, owner: f.owner, policy: 'sync' })));
  });

  void it('a health check passed by hand is held critical again by the first reconcile after the view of the agent is refreshed', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId, viewRefreshSeconds: 1 });
    const desired = [entry(f, '10.42.0.1', failing('status 500'))];
    const checkId = healthCheckId(serviceId(f, '10.42.0.1'));
    await sync(backend, f, desired);
    await consul(`/v1/agent/check/pass/${encodeURIComponent(checkId)}?note=${encodeURIComponent('looks fine to me')}`, { method: 'PUT' });
    await waitFor('the hand-passed instance among the passing ones', async () => (await passing(f.name)).length === 1, 10_000);

    // Reads come from a copy of the agent that is read again in bulk once older than a second.
    await waitFor('the hand pass seen by a read', async () => (await records(backend, f))[0]?.needsRewrite === true, 10_000);
    await sync(backend, f, desired);
    await waitFor('the instance out of rotation again', async () => (await passing(f.name)).length === 0, 10_000);
    const onAgent = await agentCheck(checkId);
    assert.equal(onAgent?.Status, 'critical');
    assert.equal(onAgent?.Output, 'status 500');
    assert.ok(isEmptyPlan(calculatePlan({ current: await records(backend, f), desired, owner: f.owner, policy: 'sync' })));
  });

  void it('a failing endpoint is not reaped while the operator passes its heartbeat, even when instances of a dead operator are', async () => {
    const f = fixture();
    const backend = registry({ clusterId: f.clusterId });
    const failingId = serviceId(f, '10.43.0.1');
    await sync(backend, f, [entry(f, '10.43.0.1', failing('status 503'))]);
    await waitFor(
      'the failing instance registered and critical in the catalog',
      async () => {
        const all = await everything(f.name);
        return all.length === 1 && all[0]?.Checks.some((c) => c.CheckID === healthCheckId(failingId) && c.Status === 'critical') === true;
      },
      10_000,
    );
    assert.equal((await passing(f.name)).length, 0);

    // Control: an instance of another operator that dies now. Its alias check turns critical after
    // the TTL, and the agent reaps it REAP_AFTER later: by then the failing instance above has been
    // critical for longer than REAP_AFTER, and the same pass of the reaper would have taken it.
    const g = fixture();
    const dying = registry({ clusterId: g.clusterId });
    await sync(dying, g, [entry(g, '10.43.0.2')]);
    await waitFor('the control instance passing', async () => (await passing(g.name)).length === 1, 10_000);
    await dying.close();
    await waitFor(
      'the agent to reap the control instance',
      async () => (await everything(g.name)).length === 0,
      (TTL + REAP_AFTER + 30 + 15) * 1000,
    );

    assert.deepEqual(await agentServiceIds(f.name), [failingId], 'the failing instance is still registered');
    assert.equal((await agentCheck(healthCheckId(failingId)))?.Status, 'critical');
    assert.equal((await passing(f.name)).length, 0);
    assert.ok(
      isEmptyPlan(
        calculatePlan({
          current: await records(backend, f),
          desired: [entry(f, '10.43.0.1', failing('status 503'))],
          owner: f.owner,
          policy: 'sync',
        }),
      ),
    );
  });

  void it('a dry run registers nothing for a failing endpoint', async () => {
    const f = fixture();
    const logged: string[] = [];
    const log = (_o: object, msg?: string): void => void logged.push(msg ?? '');
    const backend = registry({ clusterId: f.clusterId, dryRun: true, logger: { debug: log, info: log, warn: log, error: log } });
    await sync(backend, f, [entry(f, '10.44.0.1', failing('status 503'))]);
    assert.deepEqual(await agentServiceIds(f.name), []);
    assert.equal(await agentCheck(healthCheckId(serviceId(f, '10.44.0.1'))), undefined);
    assert.ok(logged.includes('dry run: Consul registration skipped'));
  });
});
