/**
 * Residency policy and route planning as pure functions: jurisdiction matching, policy resolution
 * order, classification raising, transfer bases, capability exclusions, configuration checks and
 * the load-time report of tenants no model can serve.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { ConfigError, parseConfig } from '../src/config/load.ts';
import { checkResidency, ClassificationLadder, jurisdictionCovers, requestClass, resolvePolicy } from '../src/routing/policy.ts';
import { requestNeeds, RoutingTable } from '../src/routing/router.ts';
import { BackendHealth } from '../src/routing/health.ts';
import { unservableReport } from '../src/routing/service.ts';
import type { Provider } from '../src/providers/types.ts';
import { GatewayError } from '../src/http/errors.ts';

const ladder = new ClassificationLadder(['public', 'internal', 'confidential', 'secret']);

function cfg(doc: Record<string, unknown>) {
  return parseConfig(stringify(doc), 'test', {});
}

function fakeProvider(id: string, ops = ['chat.completions', 'completions', 'embeddings', 'responses']): Provider {
  return {
    id,
    kind: 'fake',
    supports: (op) => ops.includes(op),
    start: async () => {},
    state: () => ({ ready: true }),
    call: async () => {
      throw new Error('not called');
    },
    close: async () => {},
  };
}

function table(doc: Record<string, unknown>) {
  const c = cfg(doc);
  const providers = new Map(c.backends.map((b) => [b.id, fakeProvider(b.id, b.id.startsWith('embed-only') ? ['embeddings'] : undefined)]));
  const health = new Map(c.backends.map((b) => [b.id, new BackendHealth({ id: b.id, maxInFlight: b.max_in_flight })]));
  return new RoutingTable(c, providers, health);
}

const principal = (tenant: string, jurisdiction: string | null = null, classification: string | null = null) => ({
  keyId: 'k',
  tenantId: 't',
  tenant,
  modelAllowlist: null,
  tenantAttributes: { jurisdiction, classification },
});

const chat = (extra: Record<string, unknown> = {}) => requestNeeds('chat.completions', { model: 'm', messages: [{ role: 'user', content: 'hello' }], ...extra });

describe('jurisdictions and classifications', () => {
  it('a country covers its regions, a region only itself', () => {
    assert.equal(jurisdictionCovers('MY', 'MY'), true);
    assert.equal(jurisdictionCovers('MY', 'MY-14'), true);
    assert.equal(jurisdictionCovers('MY-14', 'MY'), false);
    assert.equal(jurisdictionCovers('MY-14', 'MY-10'), false);
    assert.equal(jurisdictionCovers('MY', 'MYS'), false);
    assert.equal(jurisdictionCovers('M', 'MY'), false);
    assert.equal(jurisdictionCovers('SG', 'MY'), false);
  });

  it('policy parts come from the tenant entry, then the tenant attributes, then the default', () => {
    const residency = cfg({
      residency: { default: { allowed_jurisdictions: ['SG'], default_classification: 'internal' }, tenants: { moh: { allowed_jurisdictions: ['MY'] } } },
    }).residency;
    const moh = resolvePolicy(residency, ladder, 'moh', { jurisdiction: 'ID', classification: 'secret' });
    assert.deepEqual(moh.allowed, ['MY']);
    assert.equal(moh.defaultClass, ladder.rank('secret'), 'classification from the attribute when the entry sets none');
    const attr = resolvePolicy(residency, ladder, 'other', { jurisdiction: 'ID', classification: null });
    assert.deepEqual(attr.allowed, ['ID']);
    assert.equal(attr.defaultClass, ladder.rank('internal'));
    const none = resolvePolicy(residency, ladder, 'plain', { jurisdiction: null, classification: null });
    assert.deepEqual(none.allowed, ['SG']);
    const open = resolvePolicy(cfg({}).residency, ladder, 'x', undefined);
    assert.equal(open.allowed, '*');
    assert.equal(open.defaultClass, 0);
  });

  it('an unknown classification on a tenant counts as the highest (fail closed)', () => {
    const p = resolvePolicy(cfg({}).residency, ladder, 't', { jurisdiction: null, classification: 'TOP-SECRET-X' });
    assert.equal(p.defaultClass, ladder.highest);
  });

  it('a request raises its classification, never lowers it; unknown names are refused', () => {
    const p = resolvePolicy(cfg({}).residency, ladder, 't', { jurisdiction: null, classification: 'internal' });
    assert.equal(requestClass(ladder, p, undefined), 1);
    assert.equal(requestClass(ladder, p, 'secret'), 3);
    assert.equal(requestClass(ladder, p, 'public'), 1);
    assert.equal(requestClass(ladder, p, [' confidential ', 'public']), 2);
    assert.throws(() => requestClass(ladder, p, 'Secret'), (e: unknown) => e instanceof GatewayError && e.status === 400 && e.code === 'invalid_data_class');
    assert.throws(() => requestClass(ladder, p, ''), (e: unknown) => e instanceof GatewayError && e.code === 'invalid_data_class');
  });

  it('transfer bases: valid, expired, too low a classification; unknown backend jurisdictions', () => {
    const now = Date.parse('2026-11-29T00:00:00Z');
    const residency = cfg({
      residency: {
        tenants: {
          t: {
            allowed_jurisdictions: ['MY'],
            transfer_bases: [
              { destination: 'SG', basis: 'agreement', expires: '2026-11-29', max_classification: 'internal' },
              { destination: 'ID', basis: 'lapsed', expires: '2026-11-28' },
            ],
          },
        },
      },
    }).residency;
    const p = resolvePolicy(residency, ladder, 't', undefined);
    const sg = { id: 'sg', jurisdiction: 'SG', clearance: 3 };
    const ok = checkResidency(p, sg, 1, ladder, now);
    assert.ok(ok.ok && ok.transfer?.basis === 'agreement', 'valid through the whole expiry day');
    const high = checkResidency(p, sg, 2, ladder, now);
    assert.ok(!high.ok && high.code === 'classification_exceeds_transfer_basis');
    const later = checkResidency(p, sg, 1, ladder, Date.parse('2026-11-30T00:00:00Z'));
    assert.ok(!later.ok && later.code === 'transfer_basis_expired');
    const id = checkResidency(p, { id: 'id', jurisdiction: 'ID', clearance: 3 }, 0, ladder, now);
    assert.ok(!id.ok && id.code === 'transfer_basis_expired');
    const unknown = checkResidency(p, { id: 'u', jurisdiction: null, clearance: 3 }, 0, ladder, now);
    assert.ok(!unknown.ok && unknown.code === 'jurisdiction_unknown');
    const cleared = checkResidency(p, { id: 'my', jurisdiction: 'MY-14', clearance: 1 }, 2, ladder, now);
    assert.ok(!cleared.ok && cleared.code === 'classification_exceeds_clearance');
    const anywhere = resolvePolicy(cfg({}).residency, ladder, 'x', undefined);
    assert.ok(checkResidency(anywhere, { id: 'u', jurisdiction: null, clearance: 0 }, 0, ladder, now).ok, 'unknown location only for "*" tenants');
  });
});

describe('route planning', () => {
  const doc = {
    residency: { tenants: { moh: { allowed_jurisdictions: ['MY'], default_classification: 'confidential' } } },
    backends: [
      { id: 'my-big', provider: 'openai-compatible', base_url: 'http://127.0.0.1:1/v1', jurisdiction: 'MY', max_classification: 'secret', capabilities: { max_context: 100 } },
      { id: 'my-novision', provider: 'openai-compatible', base_url: 'http://127.0.0.1:2/v1', jurisdiction: 'MY', max_classification: 'secret', capabilities: { vision: false, tools: false } },
      { id: 'sg', provider: 'openai-compatible', base_url: 'http://127.0.0.1:3/v1', jurisdiction: 'SG', max_classification: 'secret' },
      { id: 'embed-only', provider: 'openai-compatible', base_url: 'http://127.0.0.1:4/v1', jurisdiction: 'MY', max_classification: 'secret' },
    ],
    models: [
      { name: 'chat', pool: [{ backend: 'my-big' }, { backend: 'my-novision' }, { backend: 'sg' }], fallbacks: ['strict'] },
      { name: 'strict', backend: 'sg', forbid_params: ['logit_bias'] },
      { name: 'emb', backend: 'embed-only' },
    ],
  };

  it('excludes by residency and capability, with one decision line each', () => {
    const t = table(doc);
    const plan = t.plan('chat', chat({ tools: [{ type: 'function', function: { name: 'f' } }] }), principal('moh'));
    assert.deepEqual(plan.decisions, [
      'class=confidential',
      'exclude chat/my-novision: capability_missing:tools',
      'exclude chat/sg: jurisdiction_not_allowed (SG is not in the allowed jurisdictions (MY))',
      'exclude strict/sg: jurisdiction_not_allowed (SG is not in the allowed jurisdictions (MY))',
    ]);
    const a = plan.next();
    assert.equal(a?.route.backendConfig.id, 'my-big');
    assert.equal(plan.next(), null, 'a backend is never tried twice');
  });

  it('vision and context length', () => {
    const t = table(doc);
    const img = chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:,' } }] }] });
    assert.ok(t.plan('chat', img, principal('moh')).decisions.includes('exclude chat/my-novision: capability_missing:vision'));
    const long = chat({ messages: [{ role: 'user', content: 'x'.repeat(800) }] });
    assert.ok(t.plan('chat', long, principal('moh')).decisions.includes('exclude chat/my-big: context_too_long'));
    const capped = chat({ max_tokens: 200 });
    assert.ok(t.plan('chat', capped, principal('moh')).decisions.includes('exclude chat/my-big: context_too_long'));
  });

  it('451 residency_no_allowed_backend when policy leaves nothing; 400 when nothing can do the operation', () => {
    const t = table(doc);
    const img = chat({ tools: [{ type: 'function', function: { name: 'f' } }], max_tokens: 500 });
    assert.throws(
      () => t.plan('chat', img, principal('moh')),
      (e: unknown) => e instanceof GatewayError && e.status === 451 && e.code === 'residency_no_allowed_backend' && (e as GatewayError & { decisions: string[] }).decisions.length === 5,
    );
    assert.throws(() => t.plan('emb', chat(), principal('moh')), (e: unknown) => e instanceof GatewayError && e.status === 400 && e.code === 'unsupported_operation');
    assert.throws(() => t.plan('nope', chat(), principal('moh')), (e: unknown) => e instanceof GatewayError && e.status === 404);
  });

  it('a fallback alias that forbids a field the client sent is skipped', () => {
    const t = table(doc);
    const plan = t.plan('chat', chat({ logit_bias: {} }), principal('x'));
    assert.ok(plan.decisions.includes('exclude strict: forbidden_parameter logit_bias'));
  });

  it('max_in_flight: a backend at capacity is not picked; when all are, 503 backend_unavailable', () => {
    const t = table({
      backends: [
        { id: 'a', provider: 'openai-compatible', base_url: 'http://127.0.0.1:1/v1', max_in_flight: 1 },
        { id: 'b', provider: 'openai-compatible', base_url: 'http://127.0.0.1:2/v1', max_in_flight: 1 },
      ],
      models: [{ name: 'm', strategy: 'least_in_flight', pool: [{ backend: 'a' }, { backend: 'b' }] }],
    });
    const p1 = t.plan('m', chat(), principal('x'));
    const first = p1.next()!;
    const r1 = first.member.backend.acquire();
    const p2 = t.plan('m', chat(), principal('x'));
    const second = p2.next()!;
    assert.notEqual(second.member.config.id, first.member.config.id);
    const r2 = second.member.backend.acquire();
    const p3 = t.plan('m', chat(), principal('x'));
    assert.equal(p3.next(), null, 'no panic into a backend at capacity');
    const e = p3.unavailable();
    assert.equal(e.status, 503);
    assert.equal(e.code, 'backend_unavailable');
    assert.ok(p3.decisions.some((d) => d.endsWith('at_capacity')));
    r1();
    r2();
  });

  it('panic mode: when every candidate is ejected for health, the first attempt still goes out', () => {
    const t = table({
      backends: [{ id: 'a', provider: 'openai-compatible', base_url: 'http://127.0.0.1:1/v1', breaker: { failures: 1 } }],
      models: [{ name: 'm', backend: 'a' }],
    });
    for (let i = 0; i < 5; i++) t.health.get('a')!.onFailure('connect');
    assert.equal(t.health.get('a')!.ejectedReason(), 'breaker_open');
    const p = t.plan('m', chat(), principal('x'));
    assert.equal(p.next()?.route.backendConfig.id, 'a');
    assert.ok(p.decisions.some((d) => d.startsWith('panic:')));
    assert.equal(p.next(), null);
  });
});

describe('configuration checks', () => {
  const base = { backends: [{ id: 'a', provider: 'openai-compatible', base_url: 'http://127.0.0.1:1/v1' }] };
  const issues = (doc: Record<string, unknown>): string[] => {
    try {
      cfg(doc);
      return [];
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      return e.issues;
    }
  };
  it('names the path of each problem', () => {
    assert.deepEqual(issues({ ...base, models: [{ name: 'm', pool: [{ backend: 'zz' }] }] }), ['models[0].pool[0].backend: unknown backend "zz" (known: a)']);
    assert.deepEqual(issues({ ...base, models: [{ name: 'm', pool: [{ backend: 'a' }, { backend: 'a' }] }] }), ['models[0].pool[1].backend: backend "a" is already in this pool']);
    assert.match(issues({ ...base, models: [{ name: 'm', backend: 'a', pool: [{ backend: 'a' }] }] })[0]!, /models\[0\]: give exactly one of "backend" or "pool"/);
    assert.match(issues({ ...base, models: [{ name: 'm' }] })[0]!, /give exactly one/);
    assert.deepEqual(issues({ ...base, models: [{ name: 'm', backend: 'a', fallbacks: ['x'] }] }), ['models[0].fallbacks[0]: unknown model "x"']);
    assert.deepEqual(issues({ ...base, models: [{ name: 'm', backend: 'a', fallbacks: ['m'] }] }), ['models[0].fallbacks[0]: a model cannot fall back to itself']);
    assert.match(issues({ backends: [{ ...base.backends[0], max_classification: 'ultra' }] })[0]!, /backends\[0\]\.max_classification: unknown classification "ultra"/);
    assert.match(issues({ residency: { tenants: { t: { default_classification: 'x' } } } })[0]!, /residency\.tenants\.t\.default_classification: unknown classification/);
    assert.match(issues({ residency: { tenants: { t: { allowed_jurisdictions: ['Malaysia'] } } } })[0]!, /residency\.tenants\.t\.allowed_jurisdictions\[0\]/);
    assert.match(issues({ residency: { tenants: { t: { transfer_bases: [{ destination: 'SG', basis: 'b', expires: 'soon' }] } } } })[0]!, /expires: must be an ISO 8601 date/);
  });

  it('a cycle of fallbacks is allowed and walked once', () => {
    const t = table({ ...base, models: [{ name: 'x', backend: 'a', fallbacks: ['y'] }, { name: 'y', backend: 'a', fallbacks: ['x'] }] });
    const p = t.plan('x', chat(), principal('t'));
    assert.equal(p.next()?.route.model.name, 'x');
    assert.equal(p.next(), null, 'the same backend is not tried again through the fallback');
  });

  it('reports tenants no model can ever serve', () => {
    const t = table({
      residency: { tenants: { ke: { allowed_jurisdictions: ['KE'] }, my: { allowed_jurisdictions: ['MY'] } } },
      backends: [{ id: 'a', provider: 'openai-compatible', base_url: 'http://127.0.0.1:1/v1', jurisdiction: 'MY' }],
      models: [{ name: 'm', backend: 'a' }],
    });
    const r = unservableReport(t, [{ name: 'db-tenant', jurisdiction: 'FR', classification: null }]);
    assert.equal(r.length, 2);
    assert.match(r[0]!, /^tenant "ke": no model/);
    assert.match(r[1]!, /^tenant "db-tenant": no model .*allowed: FR/);
  });
});

describe('latency EWMA decay', () => {
  it('an idle backend\'s EWMA decays (1/e after 10 s unused), so one slow sample does not exclude it from p2c for ever', () => {
    let t = 1000;
    const h = new BackendHealth({ id: 'a', maxInFlight: 0, now: () => t });
    h.onSuccess(500);
    assert.equal(h.ewmaMs(), 500);
    t += 10_000;
    assert.ok(Math.abs(h.ewmaMs()! - 500 / Math.E) < 1e-6);
    h.onSuccess(10);
    assert.ok(Math.abs(h.ewmaMs()! - (0.3 * 10 + 0.7 * 500)) < 1e-6, 'a new sample folds into the undecayed average and resets the clock');
  });
});
