/**
 * `sovra limits`, `sovra budgets` and `sovra usage`: the CLI side of /admin/v1/limits, /budgets and
 * /usage. Limits of a tenant and a key are set, shown and cleared; a budget is created, listed and
 * deleted; bad input is refused with exit code 2 (bad usage) or 1 (unknown object) and changes
 * nothing; usage rolls up request rows as a table, JSON and CSV; every change is exactly one `admin`
 * audit entry (actor `cli:…`) whose before/after digests are those of the admin API's states.
 *
 * Most commands run through `main()` in one child process per phase (a spawn per command costs
 * ~2 s here); a few run through bin/sovra.mjs to check the real process exit codes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { openStore } from '../src/store/db.ts';
import { normalise } from '../src/store/requests.ts';
import type { RequestsTable } from '../src/store/schema.ts';
import { decodeRecord, stateDigest, type AdminRecord } from '../src/audit/record.ts';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const BIN = resolve(fileURLToPath(import.meta.url), '../../bin/sovra.mjs');
const MAIN = resolve(fileURLToPath(import.meta.url), '../../src/cli/main.ts');

const CONFIG = `server: { host: 127.0.0.1, port: 0 }
database: { url: "sqlite:./data/sovra.db" }
logging: { level: silent }
backends:
  - id: engine-1
    provider: openai-compatible
    base_url: http://127.0.0.1:9/v1
    jurisdiction: MY
models:
  - name: test-model
    backend: engine-1
    upstream_model: mock-llm
`;

interface Run {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `sovra ARGS…` as a user does (its own process, real exit code). */
function sovra(cwd: string, args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, SOVRA_CONFIG: '' }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Calls `main(args)` for each command in turn, in one child process; stdout/stderr captured per command. */
const DRIVER = `
import { pathToFileURL } from 'node:url';
const [mainPath, cmds] = process.argv.slice(1);
const { main } = await import(pathToFileURL(mainPath).href);
const ow = process.stdout.write.bind(process.stdout);
const ew = process.stderr.write.bind(process.stderr);
const results = [];
for (const args of JSON.parse(cmds)) {
  let out = '';
  let err = '';
  process.stdout.write = (s) => ((out += s), true);
  process.stderr.write = (s) => ((err += s), true);
  let code;
  try {
    code = await main(args);
  } catch (e) {
    code = -1;
    err += String((e && e.stack) || e);
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
  results.push({ code, out, err });
}
ow(JSON.stringify(results));
`;

function batch(config: string, cmds: string[][]): Run[] {
  const withConfig = cmds.map((c) => [...c, '--config', config]);
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', DRIVER, MAIN, JSON.stringify(withConfig)], {
    cwd: ROOT,
    env: { ...process.env, SOVRA_CONFIG: '' },
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 16 << 20,
  });
  assert.equal(r.status, 0, `driver failed: ${r.stderr}`);
  const results = JSON.parse(r.stdout) as Run[];
  assert.equal(results.length, cmds.length);
  return results;
}

function ok(r: Run, what: string): Run {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.err}`);
  return r;
}

function requestRow(i: number, over: Partial<RequestsTable>): RequestsTable {
  return normalise({
    id: `req_${i}_${randomBytes(4).toString('hex')}`, ts: 0, key_id: null, tenant_id: null, operation: 'chat.completions',
    model: 'test-model', backend_id: 'engine-1', upstream_model: 'mock-llm', stream: 0, status: 200, outcome: 'ok', error_code: null,
    latency_ms: 5, ttfb_ms: 1, prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, usage_source: 'upstream', cost_micros: 100, ...over,
  });
}

test('limits, budgets and usage from the CLI: validation, exit codes, output, one audit entry per change', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-cli-metering-'));
  try {
    const config = join(dir, 'sovra.yaml');
    writeFileSync(config, CONFIG);
    const dbUrl = `sqlite:${join(dir, 'data', 'sovra.db')}`;

    // Phase 1: a tenant with a key, and a second tenant.
    const [t1, t2, k1] = batch(config, [
      ['tenants', 'create', 'moh', '--json'],
      ['tenants', 'create', 'mof', '--json'],
      ['keys', 'create', '--tenant', 'moh', '--name', 'bot', '--json'],
    ]);
    const moh = JSON.parse(ok(t1!, 'tenants create moh').out) as { id: string };
    const mof = JSON.parse(ok(t2!, 'tenants create mof').out) as { id: string };
    const key = JSON.parse(ok(k1!, 'keys create').out) as { id: string; key: string };
    const tenantScope = { kind: 'tenant', id: moh.id };
    const keyScope = { kind: 'key', id: key.id };

    // Request rows, as the journal writes them: two hours of one day for moh's key, one for mof.
    const h = 3_600_000;
    const d0 = Date.UTC(2025, 5, 1);
    {
      const store = await openStore(dbUrl);
      try {
        await store.db
          .insertInto('requests')
          .values([
            requestRow(1, { ts: d0 + 10 * h, tenant_id: moh.id, key_id: key.id }),
            requestRow(2, { ts: d0 + 10 * h + 60_000, tenant_id: moh.id, key_id: key.id, prompt_tokens: 20, completion_tokens: 10, total_tokens: 30, cost_micros: 250 }),
            requestRow(3, { ts: d0 + 11 * h, tenant_id: moh.id, key_id: key.id, status: 502, outcome: 'upstream_unavailable', prompt_tokens: null, completion_tokens: null, total_tokens: null, cost_micros: null, usage_source: 'none' }),
            requestRow(4, { ts: d0 + 10 * h, tenant_id: mof.id, key_id: null, model: '=HYPERLINK("x")\u001b[2J' }),
          ])
          .execute();
      } finally {
        await store.close();
      }
    }

    // Phase 2: limits, budgets, bad input, usage.
    const r = batch(config, [
      /* 0 */ ['limits', 'set', '--tenant', 'moh', '--rpm', '600', '--tpm', '200000'],
      /* 1 */ ['limits', 'set', '--key', key.id, '--rpm', '5', '--json'],
      /* 2 */ ['limits', 'show', '--tenant', moh.id, '--json'],
      /* 3 */ ['limits', 'show', '--key', key.id],
      /* 4 */ ['limits', 'set', '--tenant', 'moh', '--tpm', 'none'], // rpm kept
      /* 5 */ ['limits', 'list', '--tenant', 'moh', '--json'],
      /* 6 */ ['limits', 'set', '--key', key.id, '--rpm', ''], // cleared: no limits left on the key
      /* 7 */ ['limits', 'show', '--key', key.id, '--json'],
      /* 8 */ ['limits', 'list'],
      /* 9 */ ['budgets', 'create', '--tenant', 'moh', '--unit', 'tokens', '--amount', '5000000', '--period', 'month', '--json'],
      /* 10 */ ['budgets', 'create', '--key', key.id, '--unit', 'usd_micros', '--amount', '2500000', '--period', 'day'],
      /* 11 */ ['budgets', 'list', '--tenant', 'moh', '--json'],
      /* 12 */ ['budgets', 'list', '--key', key.id],
      /* 13 */ ['budgets', 'list', '--tenant', 'mof', '--json'],
      // bad usage: exit 2, nothing changed
      /* 14 */ ['budgets', 'create', '--tenant', 'moh', '--unit', 'tokens', '--amount=-5', '--period', 'day'],
      /* 15 */ ['budgets', 'create', '--tenant', 'moh', '--unit', 'tokens', '--amount', '1.5', '--period', 'day'],
      /* 16 */ ['budgets', 'create', '--tenant', 'moh', '--unit', 'eur', '--amount', '5', '--period', 'day'],
      /* 17 */ ['budgets', 'create', '--tenant', 'moh', '--unit', 'tokens', '--amount', '5', '--period', 'week'],
      /* 18 */ ['budgets', 'create', '--tenant', 'moh', '--key', key.id, '--unit', 'tokens', '--amount', '5', '--period', 'day'],
      /* 19 */ ['budgets', 'create', '--unit', 'tokens', '--amount', '5', '--period', 'day'],
      /* 20 */ ['limits', 'set', '--tenant', 'moh', '--key', key.id, '--rpm', '1'],
      /* 21 */ ['limits', 'set', '--tenant', 'moh', '--rpm=-1'],
      /* 22 */ ['limits', 'set', '--tenant', 'moh'],
      /* 23 */ ['limits', 'set', '--key', key.key, '--rpm', '1'], // the secret instead of the id
      /* 24 */ ['usage', '--group', 'week'],
      /* 25 */ ['usage', '--from', '2025-06-01T10:00'], // no offset: ambiguous
      /* 26 */ ['usage', '--csv', '--json'],
      /* 27 */ ['budgets', 'delete'],
      /* 28 */ ['limits', 'frobnicate'],
      // failures: exit 1, nothing changed
      /* 29 */ ['budgets', 'create', '--tenant', 'nobody', '--unit', 'tokens', '--amount', '5', '--period', 'day'],
      /* 30 */ ['limits', 'set', '--key', 'key_doesnotexist0000', '--rpm', '1'],
      /* 31 */ ['budgets', 'list', '--tenant', 'mof', '--key', key.id],
      /* 32 */ ['budgets', 'delete', 'bud_doesnotexist0000'],
      /* 33 */ ['usage', '--tenant', 'nobody'],
      // usage
      /* 34 */ ['usage', '--tenant', 'moh'],
      /* 35 */ ['usage', '--key', key.id, '--group', 'hour', '--json'],
      /* 36 */ ['usage', '--group', 'day', '--csv'],
      /* 37 */ ['usage', '--from', '2025-06-01T10:00:30Z', '--to', String(d0 + 11 * h), '--json'],
      /* 38 */ ['usage', '--model', 'test-model', '--from', '2025-06-02', '--json'],
      /* 39 */ ['usage'],
    ]);

    // limits
    assert.match(ok(r[0]!, 'limits set tenant').out, new RegExp(`^Set the rate limits of tenant ${moh.id} \\("moh"\\): rpm 600, tpm 200000\\.\n$`));
    assert.deepEqual(JSON.parse(ok(r[1]!, 'limits set key').out), { scope: keyScope, rpm: 5, tpm: null });
    assert.deepEqual(JSON.parse(ok(r[2]!, 'limits show tenant').out), { scope: tenantScope, rpm: 600, tpm: 200000 });
    assert.equal(ok(r[3]!, 'limits show key').out, `scope: key ${key.id} (tenant ${moh.id})\nrpm:   5\ntpm:   unlimited\n`);
    assert.match(ok(r[4]!, 'limits set --tpm none').out, /rpm 600, tpm unlimited\./);
    assert.deepEqual(JSON.parse(ok(r[5]!, 'limits list --tenant').out), [
      { scope: keyScope, rpm: 5, tpm: null },
      { scope: tenantScope, rpm: 600, tpm: null },
    ]);
    ok(r[6]!, "limits set --rpm ''");
    assert.deepEqual(JSON.parse(ok(r[7]!, 'limits show cleared key').out), { scope: keyScope, rpm: null, tpm: null });
    assert.equal(ok(r[8]!, 'limits list').out, `KIND\tID\tRPM\tTPM\ntenant\t${moh.id}\t600\tunlimited\n`);

    // budgets
    const bt = JSON.parse(ok(r[9]!, 'budgets create tenant').out) as Record<string, unknown> & { id: string };
    assert.match(bt.id, /^bud_[0-9A-Za-z]{16}$/);
    assert.deepEqual({ ...bt, id: 'x', createdAt: 0, periodStart: 0 }, { id: 'x', scope: tenantScope, unit: 'tokens', amount: 5_000_000, period: 'month', createdAt: 0, periodStart: 0, used: 0, reserved: 0 });
    const bkId = /^Created budget (bud_[0-9A-Za-z]{16}) for key (key_\w+) \(tenant (ten_\w+)\): 2500000 micro-USD \(2\.500000 USD\) per UTC day\.\n$/.exec(ok(r[10]!, 'budgets create key').out);
    assert.ok(bkId, r[10]!.out);
    assert.deepEqual([bkId[2], bkId[3]], [key.id, moh.id]);
    const listed = JSON.parse(ok(r[11]!, 'budgets list --tenant').out) as Array<{ id: string; used: number; reserved: number; periodStart: number }>;
    assert.deepEqual(listed.map((b) => b.id).sort(), [bt.id, bkId[1]!].sort(), "a tenant's budgets and its keys'");
    for (const b of listed) assert.deepEqual([b.used, b.reserved, typeof b.periodStart], [0, 0, 'number']);
    const keyList = ok(r[12]!, 'budgets list --key').out.trimEnd().split('\n');
    assert.equal(keyList[0], 'ID\tSCOPE\tUNIT\tAMOUNT\tPERIOD\tPERIOD START\tUSED\tRESERVED');
    assert.equal(keyList.length, 2);
    assert.match(keyList[1]!, new RegExp(`^${bkId[1]}\tkey:${key.id}\tusd_micros\t2500000\tday\t\\d{4}-\\d{2}-\\d{2}T00:00:00\\.000Z\t0\t0$`));
    assert.deepEqual(JSON.parse(ok(r[13]!, 'budgets list other tenant').out), []);

    // bad usage: exit 2 with a message naming the problem
    const bad: Array<[number, RegExp]> = [
      [14, /--amount must be an integer >= 0/],
      [15, /--amount must be an integer >= 0/],
      [16, /--unit must be one of tokens, usd_micros \(got "eur"\)/],
      [17, /--period must be one of day, month, fixed \(got "week"\)/],
      [18, /give either --tenant or --key, not both/],
      [19, /budgets create needs --tenant ID\|NAME or --key KEY_ID/],
      [20, /give either --tenant or --key, not both/],
      [21, /--rpm must be an integer >= 0, or '' \/ none/],
      [22, /limits set needs --rpm N and\/or --tpm N/],
      [23, /--key takes the key id/],
      [24, /--group must be hour, day or none/],
      [25, /--from must be a date/],
      [26, /--csv or --json, not both/],
      [27, /budgets delete needs a budget ID/],
      [28, /limits needs a subcommand: set \| show \| list/],
    ];
    for (const [i, msg] of bad) {
      assert.equal(r[i]!.code, 2, `command ${i}: ${r[i]!.err}`);
      assert.match(r[i]!.err, msg, `command ${i}`);
      assert.equal(r[i]!.out, '', `command ${i} prints nothing on stdout`);
    }
    assert.ok(!r[23]!.err.includes(key.key), 'the secret key is not echoed');
    // failures: exit 1
    const failed: Array<[number, RegExp]> = [
      [29, /no tenant with id or name "nobody"/],
      [30, /no API key with id "key_doesnotexist0000"/],
      [31, new RegExp(`key ${key.id} does not belong to tenant ${mof.id}`)],
      [32, /no budget with id "bud_doesnotexist0000"/],
      [33, /no tenant with id or name "nobody"/],
    ];
    for (const [i, msg] of failed) {
      assert.equal(r[i]!.code, 1, `command ${i}: ${r[i]!.err}`);
      assert.match(r[i]!.err, msg, `command ${i}`);
    }

    // usage
    const table = ok(r[34]!, 'usage --tenant').out.trimEnd().split('\n');
    assert.equal(table[0], 'BUCKET\tTENANT\tKEY\tMODEL\tREQUESTS\tPROMPT TOKENS\tCOMPLETION TOKENS\tTOTAL TOKENS\tCOST MICRO-USD\tERRORS');
    assert.deepEqual(table.slice(1), [`-\t${moh.id}\t${key.id}\ttest-model\t3\t30\t15\t45\t350\t1`]);
    const hourly = JSON.parse(ok(r[35]!, 'usage --key --group hour').out) as Array<{ bucket: number; requests: number; total_tokens: number; errors: number }>;
    assert.deepEqual(hourly.map((x) => [x.bucket, x.requests, x.total_tokens, x.errors]), [[d0 + 10 * h, 2, 45, 0], [d0 + 11 * h, 1, 0, 1]]);
    const csv = ok(r[36]!, 'usage --csv').out.trimEnd().split('\n');
    assert.equal(csv[0], 'bucket,tenant_id,key_id,model,requests,prompt_tokens,completion_tokens,total_tokens,cost_micros,errors');
    assert.deepEqual(csv.slice(1).sort(), [
      `2025-06-01T00:00:00.000Z,${mof.id},,"'=HYPERLINK(""x"")\u001b[2J",1,10,5,15,100,0`,
      `2025-06-01T00:00:00.000Z,${moh.id},${key.id},test-model,3,30,15,45,350,1`,
    ].sort());
    const window = JSON.parse(ok(r[37]!, 'usage --from --to').out) as Array<{ requests: number; tenant_id: string }>;
    assert.deepEqual(window.map((x) => [x.tenant_id, x.requests]), [[moh.id, 1]], 'from inclusive (an RFC 3339 time), to exclusive (ms)');
    assert.deepEqual(JSON.parse(ok(r[38]!, 'usage --from date').out), [], 'a plain date is UTC midnight');
    const all = ok(r[39]!, 'usage').out;
    assert.ok(!all.includes('\u001b'), 'control characters from client-chosen model names never reach the terminal');
    assert.match(all, /'?=HYPERLINK\("x"\)\\u001b\[2J/);

    // Phase 3: delete a budget (by its id), list again.
    const [del, after] = batch(config, [['budgets', 'delete', bt.id], ['budgets', 'list', '--json']]);
    assert.equal(ok(del!, 'budgets delete').out, `Deleted budget ${bt.id}.\n`);
    const remaining = JSON.parse(ok(after!, 'budgets list').out) as Array<Record<string, unknown> & { id: string }>;
    assert.deepEqual(remaining.map((b) => b.id), [bkId[1]]);

    // The real process: exit codes and streams as the shell sees them.
    const dash = sovra(dir, ['budgets', 'create', '--tenant', 'moh', '--unit', 'tokens', '--amount', '-5', '--period', 'day', '--config', config]);
    assert.equal(dash.code, 2, dash.err);
    assert.match(dash.err, /--amount/);
    const unknown = sovra(dir, ['limits', 'show', '--tenant', 'nobody', '--config', config]);
    assert.equal(unknown.code, 1, unknown.err);
    assert.match(unknown.err, /^sovra: no tenant with id or name "nobody"\n$/);
    const shown = sovra(dir, ['limits', 'show', '--tenant', 'moh', '--json', '--config', config]);
    assert.equal(shown.code, 0, shown.err);
    assert.deepEqual(JSON.parse(shown.out), { scope: tenantScope, rpm: 600, tpm: null });

    // Audit: exactly one admin entry per change, in order, with the admin API's state digests.
    const store = await openStore(dbUrl);
    try {
      const rows = await store.db.selectFrom('audit_queue').select(['entry']).orderBy('seq').execute();
      const entries = rows.map((x) => decodeRecord(x.entry)).filter((x): x is AdminRecord => x.type === 'admin');
      for (const e of entries) assert.match(e.actor, /^cli(:|$)/);
      const budget = (b: Record<string, unknown>) => {
        const { periodStart: _p, used: _u, reserved: _r, ...rest } = b;
        return rest;
      };
      const lim = (scope: object, rpm: number | null, tpm: number | null) => stateDigest({ scope, rpm, tpm });
      const want: Array<[string, string, string | null, string | null]> = [
        ['limits.set', moh.id, lim(tenantScope, null, null), lim(tenantScope, 600, 200000)],
        ['limits.set', key.id, lim(keyScope, null, null), lim(keyScope, 5, null)],
        ['limits.set', moh.id, lim(tenantScope, 600, 200000), lim(tenantScope, 600, null)],
        ['limits.set', key.id, lim(keyScope, 5, null), lim(keyScope, null, null)],
        ['budgets.create', bt.id, null, stateDigest(budget(bt))],
        ['budgets.create', bkId[1]!, null, stateDigest(budget(remaining[0]!))],
        ['budgets.delete', bt.id, stateDigest(budget(bt)), null],
      ];
      const got = entries.filter((e) => e.action.startsWith('limits.') || e.action.startsWith('budgets.'));
      assert.deepEqual(
        got.map((e) => [e.action, e.target]),
        want.map((w) => [w[0], w[1]]),
        'one entry per change; refused and failed commands wrote none',
      );
      want.forEach(([action, target, before, afterDigest], i) => {
        const e = got[i]!;
        assert.equal(e.before, before, `${action} ${target}: before`);
        assert.equal(e.after, afterDigest, `${action} ${target}: after`);
      });
      assert.deepEqual(
        entries.filter((e) => !got.includes(e)).map((e) => e.action),
        ['tenants.create', 'tenants.create', 'keys.create'],
      );
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
