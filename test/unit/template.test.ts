import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  renderConsulServiceName,
  renderRegistryNamespace,
  renderTemplate,
  TemplateError,
  validateTemplate,
} from '../../src/registry/template.ts';

void describe('renderRegistryNamespace', () => {
  const ok: Array<[string, string, string, string]> = [
    ['the default template passes the Kubernetes namespace through', '{namespace}', 'prod', 'prod'],
    ['a prefix template prepends literal text', 'env-{namespace}', 'prod', 'env-prod'],
    ['a template without placeholders maps every namespace to one registry namespace', 'shared', 'prod', 'shared'],
    ['a placeholder may appear twice', '{namespace}-{namespace}', 'dev', 'dev-dev'],
    ['a result of exactly 253 characters is accepted', `${'x'.repeat(251)}-{namespace}`, 'a', `${'x'.repeat(251)}-a`],
  ];
  for (const [name, template, ns, want] of ok) {
    void it(name, () => assert.equal(renderRegistryNamespace(template, ns), want));
  }

  const bad: Array<[string, string, string, RegExp]> = [
    [
      'an unknown placeholder is rejected and the available ones are listed',
      'env-{ns}',
      'prod',
      /unknown placeholder "\{ns\}".*\{namespace\}/,
    ],
    ['a service placeholder is unknown in the namespace template', '{service}', 'prod', /unknown placeholder "\{service\}"/],
    ['an unmatched brace is rejected', 'env-{namespace', 'prod', /unmatched "\{" or "\}"/],
    ['a stray closing brace is rejected', 'env}-{namespace}', 'prod', /unmatched/],
    ['an empty template is rejected as an empty result', '', 'prod', /is empty; put literal text/],
    ['a slash is rejected because it would escape the key segment', 'env/{namespace}', 'prod', /contains '\/'.*remove '\/'/],
    ['a double dot is rejected', '..{namespace}', 'prod', /contains '\.\.'/],
    ['a lone dot is rejected', '.', 'prod', /is '\.'/],
    ['white space is rejected', 'env {namespace}', 'prod', /white space or a control character \(U\+0020\)/],
    ['a tab is rejected', 'env\t{namespace}', 'prod', /U\+0009/],
    ['a control character is rejected', 'env\u0000{namespace}', 'prod', /U\+0000/],
    ['a non-breaking space is rejected', 'env\u00a0{namespace}', 'prod', /U\+00A0/],
    [
      'a result longer than 253 characters is rejected with its length',
      `${'x'.repeat(251)}-{namespace}`,
      'ab',
      /is 254 characters long.*within 253/,
    ],
  ];
  for (const [name, template, ns, message] of bad) {
    void it(name, () => {
      assert.throws(
        () => renderRegistryNamespace(template, ns),
        (err: unknown) => {
          assert.ok(err instanceof TemplateError);
          assert.equal(err.field, 'spec.namespace');
          assert.equal(err.template, template);
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }
});

void describe('renderConsulServiceName', () => {
  const ok: Array<[string, string, { namespace: string; service: string }, string]> = [
    ['the default template is the service name', '{service}', { namespace: 'prod', service: 'user' }, 'user'],
    [
      'the OSS isolation template joins namespace and service',
      '{namespace}-{service}',
      { namespace: 'prod', service: 'user' },
      'prod-user',
    ],
  ];
  for (const [name, template, values, want] of ok) {
    void it(name, () => assert.equal(renderConsulServiceName(template, values), want));
  }

  void it('an unknown placeholder names the field and the placeholders available', () => {
    assert.throws(
      () => renderConsulServiceName('{svc}', { namespace: 'prod', service: 'user' }),
      (err: unknown) => {
        assert.ok(err instanceof TemplateError);
        assert.equal(err.field, 'spec.consul.serviceName');
        assert.match(err.message, /\{namespace\}, \{service\}/);
        return true;
      },
    );
  });
});

void describe('renderTemplate', () => {
  void it('an empty result is accepted when the field allows it', () => {
    assert.equal(renderTemplate('', {}, { field: 'spec.consul.namespace', allowed: ['namespace'], allowEmpty: true }), '');
  });

  void it('validateTemplate checks syntax without values', () => {
    assert.doesNotThrow(() => validateTemplate('env-{namespace}', { field: 'spec.namespace', allowed: ['namespace'] }));
    assert.throws(() => validateTemplate('env-{nope}', { field: 'spec.namespace', allowed: ['namespace'] }), TemplateError);
  });

  void it('a placeholder without a supplied value is reported', () => {
    assert.throws(() => renderTemplate('{namespace}', {}, { field: 'spec.namespace', allowed: ['namespace'] }), /no value was supplied/);
  });
});
