import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DiscoveryConfigError } from '../src/errors.ts';
import { consulNamespaceOf, consulServiceName, registryFilter } from '../src/consul/naming.ts';

describe('Consul names from the Registry templates', () => {
  test('the default template is the service itself', () => {
    assert.equal(consulServiceName('{service}', 'prod', 'user'), 'user');
  });

  test('{namespace}-{service} renders as the operator renders it', () => {
    assert.equal(consulServiceName('{namespace}-{service}', 'prod', 'user'), 'prod-user');
  });

  test('no namespace template means no Consul namespace is sent', () => {
    assert.equal(consulNamespaceOf(undefined, 'prod'), '');
    assert.equal(consulNamespaceOf('', 'prod'), '');
    assert.equal(consulNamespaceOf('team-{namespace}', 'prod'), 'team-prod');
  });

  const refused: { name: string; template: string }[] = [
    { name: 'an unknown placeholder', template: '{cluster}-{service}' },
    { name: 'an unmatched brace', template: '{service' },
    { name: 'a slash', template: '{namespace}/{service}' },
    { name: 'white space', template: '{namespace} {service}' },
  ];
  for (const c of refused) {
    test(`a template with ${c.name} is refused with a message naming it`, () => {
      assert.throws(
        () => consulServiceName(c.template, 'prod', 'user'),
        (err: unknown) => {
          assert.ok(err instanceof DiscoveryConfigError);
          assert.match(err.message, /serviceName/);
          return true;
        },
      );
    });
  }
});

describe('registryFilter', () => {
  test('pins the registry namespace and the service with the index form bexpr needs for keys with dashes', () => {
    assert.equal(
      registryFilter('prod', 'user'),
      'Service.Meta["kr-registry-namespace"] == "prod" and Service.Meta["kr-service"] == "user"',
    );
  });

  test('quotes values so that they cannot change the expression', () => {
    assert.equal(
      registryFilter('a" or "1" == "1', 'x'),
      'Service.Meta["kr-registry-namespace"] == "a\\" or \\"1\\" == \\"1" and Service.Meta["kr-service"] == "x"',
    );
  });
});
