import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { prometheusHooks } from '../src/observability/prometheus.ts';
import type { Instance } from '../src/instance.ts';
import { inst } from './fakes.ts';
import { SERVICE, makeClient } from './call-support.ts';

/** The value of one series of a metric in `registry`, undefined when the series does not exist. */
async function value(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric !== undefined, `${name} is registered`);
  const { values } = await metric.get();
  const series = values.find(
    (v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l) && (v as { metricName?: string }).metricName !== `${name}_bucket`,
  );
  return series?.value;
}

const fails = async (instance: Instance): Promise<never> => {
  throw new Error(`${instance.id} is down`);
};

describe('prometheusHooks', () => {
  test('counts calls by outcome, and their duration', async () => {
    const registry = new Registry();
    const { client, clock } = makeClient({ hooks: prometheusHooks(registry), call: { breaker: false } });
    await client.call(SERVICE, async () => clock.advance(250));
    await client.call(SERVICE, async () => 1);
    await client.call(SERVICE, fails, { attempts: 1 }).catch(() => undefined);
    assert.equal(await value(registry, 'discovery_calls_total', { service: SERVICE, outcome: 'success' }), 2);
    assert.equal(await value(registry, 'discovery_calls_total', { service: SERVICE, outcome: 'failed' }), 1);
    const text = await registry.metrics();
    assert.match(text, /discovery_call_duration_seconds_count\{service="user-service"\} 3/);
    assert.match(text, /discovery_call_duration_seconds_sum\{service="user-service"\} 0\.25/);
    await client.close();
  });

  test('counts retries sent and denied by the budget', async () => {
    const registry = new Registry();
    const { client } = makeClient({
      hooks: prometheusHooks(registry),
      outlier: false,
      call: { breaker: false, retryBudget: { minRetriesPerSecond: 0, retryRatio: 0.5 } },
    });
    await client.call(SERVICE, fails).catch(() => undefined); // earns half a retry: denied
    await client.call(SERVICE, fails).catch(() => undefined); // earns the other half: one retry, then denied
    assert.equal(await value(registry, 'discovery_retries_total', { service: SERVICE, result: 'sent' }), 1);
    assert.equal(await value(registry, 'discovery_retries_total', { service: SERVICE, result: 'denied' }), 2);
    await client.close();
  });

  test('counts ejections and breaker openings, and reads known and ejected instances at scrape time', async () => {
    const registry = new Registry();
    const { client, clock } = makeClient({
      hooks: prometheusHooks(registry),
      outlier: { consecutiveFailures: 2, baseEjectionMs: 1000 },
      call: { attempts: 1, breaker: { consecutiveFailures: 2, halfOpenAfterMs: 600_000 } },
    });
    await client.ready(SERVICE);
    assert.equal(await value(registry, 'discovery_instances', { service: SERVICE, state: 'known' }), 3);
    assert.equal(await value(registry, 'discovery_instances', { service: SERVICE, state: 'ejected' }), 0);
    const aDown = async (instance: Instance): Promise<string> => (instance.id === 'a' ? fails(instance) : instance.id!);
    for (let k = 0; k < 6; k++) await client.call(SERVICE, aDown).catch(() => undefined);
    assert.equal(await value(registry, 'discovery_ejections_total', { service: SERVICE }), 1);
    assert.equal(await value(registry, 'discovery_breaker_open_total', { service: SERVICE }), 1);
    assert.equal(await value(registry, 'discovery_instances', { service: SERVICE, state: 'ejected' }), 1);
    clock.advance(1000); // the ejection ends; the scrape sees it
    assert.equal(await value(registry, 'discovery_instances', { service: SERVICE, state: 'ejected' }), 0);
    await client.close();
  });

  test('reports how long each cache has been out of step with the registry', async () => {
    const registry = new Registry();
    const { client, clock, source } = makeClient({ hooks: prometheusHooks(registry) });
    await client.ready(SERVICE);
    assert.equal(await value(registry, 'discovery_cache_stale_seconds', { service: SERVICE }), 0);
    source.goDown();
    clock.advance(7_500);
    assert.equal(await value(registry, 'discovery_cache_stale_seconds', { service: SERVICE }), 7.5);
    source.comeBack();
    assert.equal(await value(registry, 'discovery_cache_stale_seconds', { service: SERVICE }), 0);
    await client.close();
  });

  test('hooks shared by two clients sum their instances', async () => {
    const registry = new Registry();
    const hooks = prometheusHooks(registry);
    const one = makeClient({ hooks });
    const two = makeClient({ hooks }, [inst('x')]);
    await one.client.ready(SERVICE);
    await two.client.ready(SERVICE);
    assert.equal(await value(registry, 'discovery_instances', { service: SERVICE, state: 'known' }), 4);
    await one.client.close();
    await two.client.close();
  });

  test('the main entry point never loads prom-client', async () => {
    // The hook rejects every import of prom-client. The prometheus entry point, imported after the
    // main one, must trip it: otherwise the hook could see nothing and the first line would prove
    // nothing. The sources stand in for the package's entry points (see package.json "exports").
    const main = new URL('../src/index.ts', import.meta.url).href;
    const prometheus = new URL('../src/observability/prometheus.ts', import.meta.url).href;
    const script = `
      import { registerHooks } from 'node:module';
      registerHooks({
        resolve(specifier, context, next) {
          if (specifier === 'prom-client') throw new Error('prom-client was loaded by ' + context.parentURL);
          return next(specifier, context);
        },
      });
      const discovery = await import(${JSON.stringify(main)});
      console.log(typeof discovery.DiscoveryClient);
      console.log(await import(${JSON.stringify(prometheus)}).then(() => 'the prometheus entry point loaded', (err) => err.message));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: import.meta.dirname });
    assert.deepEqual(stdout.trim().split('\n'), ['function', `prom-client was loaded by ${prometheus}`]);
  });
});
