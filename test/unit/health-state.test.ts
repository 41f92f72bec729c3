import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { EndpointHealth, endpointKey, selectRegistered } from '../../src/health/state.ts';
import type { HealthStatus } from '../../src/health/state.ts';
import { InvalidHealthCheckError, withDefaults } from '../../src/health/types.ts';
import type { HealthCheckSpec } from '../../src/health/types.ts';

/** `+` is a passing probe, `-` a failing one. */
function replay(health: EndpointHealth, probes: string): { statuses: HealthStatus[]; transitions: number[] } {
  const statuses: HealthStatus[] = [];
  const transitions: number[] = [];
  [...probes].forEach((probe, index) => {
    if (health.record({ healthy: probe === '+', message: probe === '+' ? 'ok' : 'status 503' })) transitions.push(index);
    statuses.push(health.status);
  });
  return { statuses, transitions };
}

describe('EndpointHealth', () => {
  const cases: Array<{
    name: string;
    failureThreshold: number;
    successThreshold: number;
    assumeHealthy?: boolean;
    probes: string;
    want: HealthStatus[];
  }> = [
    {
      name: 'a new endpoint stays unknown until successThreshold successes in a row',
      failureThreshold: 3,
      successThreshold: 2,
      probes: '++',
      want: ['unknown', 'healthy'],
    },
    {
      name: 'a new endpoint is healthy after one success with the default successThreshold of 1',
      failureThreshold: 3,
      successThreshold: 1,
      probes: '+',
      want: ['healthy'],
    },
    {
      name: 'a new endpoint becomes unhealthy only after failureThreshold failures in a row',
      failureThreshold: 3,
      successThreshold: 1,
      probes: '---',
      want: ['unknown', 'unknown', 'unhealthy'],
    },
    {
      name: 'a healthy endpoint is not ejected before failureThreshold consecutive failures',
      failureThreshold: 3,
      successThreshold: 1,
      probes: '+--+--',
      want: ['healthy', 'healthy', 'healthy', 'healthy', 'healthy', 'healthy'],
    },
    {
      name: 'a healthy endpoint is ejected on the failureThreshold-th consecutive failure',
      failureThreshold: 3,
      successThreshold: 1,
      probes: '+---',
      want: ['healthy', 'healthy', 'healthy', 'unhealthy'],
    },
    {
      name: 'an unhealthy endpoint is not re-admitted before successThreshold consecutive successes',
      failureThreshold: 1,
      successThreshold: 3,
      probes: '-++-+++',
      want: ['unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'healthy'],
    },
    {
      name: 'an endpoint created with assumeHealthy starts healthy and still needs failureThreshold failures to leave',
      failureThreshold: 2,
      successThreshold: 1,
      assumeHealthy: true,
      probes: '--',
      want: ['healthy', 'unhealthy'],
    },
    {
      name: 'successes on an assumed-healthy endpoint change nothing',
      failureThreshold: 2,
      successThreshold: 1,
      assumeHealthy: true,
      probes: '++',
      want: ['healthy', 'healthy'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const health = new EndpointHealth(c, { assumeHealthy: c.assumeHealthy ?? false });
      assert.equal(health.status, c.assumeHealthy ? 'healthy' : 'unknown');
      assert.deepEqual(replay(health, c.probes).statuses, c.want);
    });
  }

  it('record returns true exactly on the probes that change the status', () => {
    const health = new EndpointHealth({ failureThreshold: 2, successThreshold: 2 });
    assert.deepEqual(replay(health, '++++--+-++').transitions, [1, 5, 9]);
  });

  it('keeps the latest probe message and the length of the current run', () => {
    const health = new EndpointHealth({ failureThreshold: 3, successThreshold: 1 });
    health.record({ healthy: true, message: 'status 200' });
    health.record({ healthy: false, message: 'redis is "timeout", want "ok"' });
    health.record({ healthy: false, message: 'redis is "timeout", want "ok"' });
    assert.equal(health.lastMessage, 'redis is "timeout", want "ok"');
    assert.equal(health.consecutive, 2);
  });
});

describe('selectRegistered', () => {
  const endpoints = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'].map((address) => ({ address, port: 8080 }));
  const statesOf = (...statuses: HealthStatus[]): Map<string, HealthStatus> =>
    new Map(statuses.map((status, index) => [endpointKey(endpoints[index]!), status]));
  const addresses = (registered: readonly { address: string }[]): string[] => registered.map((endpoint) => endpoint.address);

  const cases: Array<{ name: string; states: Map<string, HealthStatus>; panicThresholdPercent: number; want: string[]; panic: boolean }> = [
    {
      name: 'every healthy endpoint is registered',
      states: statesOf('healthy', 'healthy', 'healthy', 'healthy'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
      panic: false,
    },
    {
      name: 'unhealthy and unknown endpoints are left out while enough endpoints are healthy',
      states: statesOf('healthy', 'healthy', 'unhealthy', 'unknown'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2'],
      panic: false,
    },
    {
      name: 'an endpoint missing from the states counts as unknown and is left out',
      states: statesOf('healthy', 'healthy'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2'],
      panic: false,
    },
    {
      name: 'when every endpoint fails all are kept and panic is reported',
      states: statesOf('unhealthy', 'unhealthy', 'unhealthy', 'unhealthy'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
      panic: true,
    },
    {
      name: 'when fewer than the threshold percentage are healthy all are kept, unknown ones included',
      states: statesOf('healthy', 'unhealthy', 'unhealthy', 'unhealthy'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
      panic: true,
    },
    {
      name: 'an endpoint not judged yet counts as not failing: two of four failing is not below 50 %',
      states: statesOf('healthy', 'unhealthy', 'unhealthy', 'unknown'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1'],
      panic: false,
    },
    {
      name: 'a first verdict that is a failure, while the rest are not probed yet (a restart), is not panic',
      states: statesOf('unhealthy', 'unknown', 'unknown', 'unknown'),
      panicThresholdPercent: 50,
      want: [],
      panic: false,
    },
    {
      name: 'three of four failing is panic even while the fourth is not probed yet',
      states: statesOf('unhealthy', 'unhealthy', 'unhealthy', 'unknown'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
      panic: true,
    },
    {
      name: 'exactly the threshold percentage healthy is not panic',
      states: statesOf('healthy', 'healthy', 'unhealthy', 'unhealthy'),
      panicThresholdPercent: 50,
      want: ['10.0.0.1', '10.0.0.2'],
      panic: false,
    },
    {
      name: 'a threshold of 0 disables panic mode even when every endpoint fails',
      states: statesOf('unhealthy', 'unhealthy', 'unhealthy', 'unhealthy'),
      panicThresholdPercent: 0,
      want: [],
      panic: false,
    },
    {
      name: 'endpoints that have not been judged yet do not trigger panic mode and are not registered',
      states: statesOf('unknown', 'unknown', 'unknown', 'unknown'),
      panicThresholdPercent: 50,
      want: [],
      panic: false,
    },
    {
      name: 'a threshold of 100 keeps everything as soon as one judged endpoint fails',
      states: statesOf('healthy', 'healthy', 'healthy', 'unhealthy'),
      panicThresholdPercent: 100,
      want: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
      panic: true,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const selection = selectRegistered(endpoints, c.states, c.panicThresholdPercent);
      assert.deepEqual(addresses(selection.registered), c.want);
      assert.equal(selection.panic, c.panic);
    });
  }

  it('reads the status of EndpointHealth objects as well as of plain statuses', () => {
    const healthy = new EndpointHealth({ failureThreshold: 1, successThreshold: 1 }, { assumeHealthy: true });
    const failing = new EndpointHealth({ failureThreshold: 1, successThreshold: 1 }, { assumeHealthy: true });
    failing.record({ healthy: false, message: 'connection refused' });
    const states = new Map([
      [endpointKey(endpoints[0]!), healthy],
      [endpointKey(endpoints[1]!), failing],
    ]);
    const selection = selectRegistered(endpoints.slice(0, 2), states, 0);
    assert.deepEqual(addresses(selection.registered), ['10.0.0.1']);
    assert.deepEqual({ healthy: selection.healthy, judged: selection.judged }, { healthy: 1, judged: 2 });
  });

  it('writes IPv6 endpoint keys with brackets so the port stays unambiguous', () => {
    assert.equal(endpointKey({ address: 'fd00::1', port: 80 }), '[fd00::1]:80');
    assert.equal(endpointKey({ address: '10.0.0.1', port: 80 }), '10.0.0.1:80');
  });
});

describe('withDefaults', () => {
  it('fills in the Kubernetes-like defaults for every timing knob', () => {
    const resolved = withDefaults({ tcp: {} });
    assert.deepEqual(resolved, {
      probe: { kind: 'tcp', port: undefined },
      intervalSeconds: 10,
      timeoutSeconds: 1,
      failureThreshold: 3,
      successThreshold: 1,
      panicThresholdPercent: 50,
    });
  });

  it('fills in the http defaults and parses status ranges', () => {
    const resolved = withDefaults({ http: { path: '/healthz', expectedStatuses: [204, '300-302'] } });
    assert.deepEqual(resolved.probe, {
      kind: 'http',
      path: '/healthz',
      port: undefined,
      scheme: 'http',
      insecureSkipVerify: false,
      headers: {},
      expectedStatuses: [
        { min: 204, max: 204 },
        { min: 300, max: 302 },
      ],
      expectedJSON: {},
    });
    const defaults = withDefaults({ http: { path: '/' } }).probe;
    assert.deepEqual(defaults.kind === 'http' && defaults.expectedStatuses, [{ min: 200, max: 399 }]);
  });

  const invalid: Array<{ name: string; spec: unknown; message: RegExp }> = [
    { name: 'no probe kind at all is refused', spec: {}, message: /exactly one of http, tcp or grpc \(found none\)/ },
    { name: 'two probe kinds are refused', spec: { tcp: {}, grpc: {} }, message: /found tcp, grpc/ },
    { name: 'an interval under one second is refused', spec: { tcp: {}, intervalSeconds: 0 }, message: /intervalSeconds must be/ },
    {
      name: 'a timeout longer than the interval is refused',
      spec: { tcp: {}, intervalSeconds: 2, timeoutSeconds: 3 },
      message: /timeoutSeconds must be a whole number between 1 and 2/,
    },
    { name: 'a panic threshold over 100 is refused', spec: { tcp: {}, panicThresholdPercent: 101 }, message: /panicThresholdPercent/ },
    { name: 'a path without a leading slash is refused', spec: { http: { path: 'healthz' } }, message: /must start with "\/"/ },
    { name: 'a malformed status range is refused', spec: { http: { path: '/', expectedStatuses: ['2xx'] } }, message: /"2xx" is not/ },
    { name: 'a port out of range is refused', spec: { grpc: { port: 70000 } }, message: /grpc\.port/ },
  ];
  for (const c of invalid) {
    it(c.name, () => {
      assert.throws(
        () => withDefaults(c.spec as HealthCheckSpec),
        (error: unknown) => {
          assert.ok(error instanceof InvalidHealthCheckError);
          assert.match(error.message, c.message);
          return true;
        },
      );
    });
  }
});
