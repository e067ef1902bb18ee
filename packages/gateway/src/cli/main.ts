/**
 * The `sovra` command line.
 *
 *   sovra serve                                   run the gateway (default command)
 *   sovra keys create --tenant NAME [--name LABEL] print a new API key once
 *   sovra keys list                               list keys (never the key or its digest)
 *   sovra keys revoke ID                          revoke a key
 *   sovra keys rotate ID [--overlap 24h]          new key with the same settings; the old one expires after the overlap
 *   sovra tenants create|list|show|update         tenants (agencies) and their attributes
 *   sovra admins create|list|revoke               admin principals and their admin keys (root of trust)
 *   sovra limits set|show|list                    rate limits (RPM/TPM) of a tenant or a key
 *   sovra budgets create|list|delete              budgets (tokens or micro-USD) of a tenant or a key
 *   sovra usage [--tenant …] [--group day] [--csv] usage rollups (as GET /admin/v1/usage)
 *   sovra config check [FILE]                     validate a configuration file
 *   sovra audit vkey | verify | prove | check-proof | erase   transparency log (src/audit/cli.ts)
 *
 * Common option: --config FILE (default: $SOVRA_CONFIG or ./sovra.yaml).
 *
 * When the audit log is on, every change (tenants, keys, admins, limits, budgets) is one `admin`
 * entry, with actor `cli:<OS user>` and the digests of the state before and after (for limits and
 * budgets the same states as the admin API's). A running server sees limit and budget changes
 * within its definitions cache (2 s).
 *
 * Exit codes: 0 success; 1 failure (unknown object, database or audit error, …); 2 bad usage: an
 * unknown command or option, and for `limits`, `budgets` and `usage` also a missing, conflicting or
 * malformed option ({@link UsageError}; the older verbs report those with 1).
 */
import { parseArgs } from 'node:util';
import { existsSync, watch } from 'node:fs';
import { ConfigError, loadConfig, parseConfig, resolveConfigPath, resolveDatabaseUrl, type LoadedConfig } from '../config/load.ts';
import { createGateway } from '../app.ts';
import { openStore } from '../store/db.ts';
import { createKey, listKeys, revokeKey } from '../keys/keys.ts';
import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { Journal } from '../audit/journal.ts';
import { apiKeyState, cliActor, recordAdminAction } from '../audit/admin.ts';
import { auditCheckCommitment, auditCheckProof, auditOpen, auditProve, auditVerify, auditVkey, eraseEntry, type AuditCliOptions, type CliIo } from '../audit/cli.ts';
import { loadContentKeyring } from '../audit/content.ts';
import type { Store } from '../store/db.ts';
import { GatewayError } from '../http/errors.ts';
import { TlogError } from '@sovra/tlog';
import {
  BUDGET_PERIODS,
  BUDGET_UNITS,
  createBudget,
  deleteBudget,
  getLimits,
  listBudgets,
  listLimits,
  parseUsageBound,
  queryUsage,
  setLimits,
  usageCsv,
  type BudgetPeriod,
  type BudgetState,
  type BudgetUnit,
  type LimitSpec,
  type Scope,
  type UsageFilter,
  type UsageRow,
} from '../metering/index.ts';
import {
  auditedChange,
  auditedCreate,
  createAdmin,
  createTenant,
  findTenant,
  getApiKey,
  listAdmins,
  listApiKeys,
  listTenants,
  revokeAdmin,
  rotateApiKey,
  updateTenant,
  validateAllowlist,
  type ApiKey,
  type ChangeContext,
  type Tenant,
  type TenantAttributesInput,
} from '../tenancy/index.ts';

const USAGE = `usage: sovra <command> [options]

commands:
  serve                                     run the gateway (default)
  keys create --tenant NAME [--label LABEL] [--models a,b] [--expires ISO]
                                            create an API key; it is printed once
                                            (--name is an alias of --label)
  keys list                                 list API keys (id, tenant, label, prefix, state)
  keys revoke ID                            revoke an API key
  keys rotate ID [--overlap 24h]            new key (printed once) with the same settings; the
                                            old key keeps working for the overlap (s, m, h, d)
  tenants create NAME [--display-name X] [--jurisdiction CC] [--classification LABEL]
  tenants list | show ID|NAME
  tenants update ID|NAME [--display-name X] [--jurisdiction CC] [--classification LABEL]
                                            ('' clears an attribute)
  admins create --role platform-admin|tenant-admin|auditor [--tenant ID|NAME] [--name N]
                                            create an admin and print its admin key once
                                            (a fresh install starts with --role platform-admin)
  admins list                               list admins (never their keys)
  admins revoke ID                          revoke an admin
  limits set (--tenant ID|NAME | --key KEY_ID) [--rpm N] [--tpm N]
                                            set requests / tokens per minute; an option left
                                            out keeps its value, '' or none clears it (unlimited)
  limits show (--tenant ID|NAME | --key KEY_ID)
  limits list [--tenant ID|NAME]            the limits that are set (a tenant: its own and its keys')
  budgets create (--tenant ID|NAME | --key KEY_ID) --unit tokens|usd_micros --amount N
                 --period day|month|fixed   a budget (N: integer >= 0, micro-USD for usd_micros)
  budgets list [--tenant ID|NAME] [--key KEY_ID]
                                            budgets with used / reserved this period
  budgets delete ID                         delete a budget
  usage [--tenant ID|NAME] [--key KEY_ID] [--model ALIAS] [--from T] [--to T]
        [--group hour|day|none] [--csv|--json]
                                            usage rollups, times [from, to): ISO 8601 date,
                                            RFC 3339 date-time or ms since epoch
  config check [FILE]                       validate a configuration file
  audit vkey                                print the transparency log's verifier key
  audit verify URL --vkey KEY [--prev FILE] [--full] [--save FILE]
                                            verify a log over HTTP (exit 3: fork or rollback)
  audit prove REQUEST_ID [--out DIR]        write <id>.tlog-proof and <id>.entry.json
  audit check-proof FILE --vkey KEY [--entry FILE]
                                            check an offline proof (no network)
  audit erase REQUEST_ID                    delete an entry's commitment salt and retained
                                            content; log the erasure
  audit open REQUEST_ID [--out DIR]         write the entry, its salt and any retained request /
                                            response bytes, checked against its commitments
  audit check-commitment ENTRY_FILE --salt FILE [--request FILE] [--response FILE]
                                            check bytes against an entry's commitments (offline)

options:
  --config FILE   configuration file (default: $SOVRA_CONFIG or ./sovra.yaml)
  --json          machine-readable output (list, show, create and set verbs: camelCase
                  fields, times in ms; usage: the rows of GET /admin/v1/usage, snake_case,
                  with bucket in ms)
  -h, --help      show this help
`;

/** Run the CLI; resolves with the process exit code (serve resolves only on failure). */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        tenant: { type: 'string' },
        name: { type: 'string' },
        label: { type: 'string' },
        models: { type: 'string' },
        expires: { type: 'string' },
        overlap: { type: 'string' },
        role: { type: 'string' },
        'display-name': { type: 'string' },
        jurisdiction: { type: 'string' },
        classification: { type: 'string' },
        json: { type: 'boolean' },
        vkey: { type: 'string' },
        prev: { type: 'string' },
        full: { type: 'boolean' },
        save: { type: 'string' },
        out: { type: 'string' },
        entry: { type: 'string' },
        salt: { type: 'string' },
        request: { type: 'string' },
        response: { type: 'string' },
        key: { type: 'string' },
        rpm: { type: 'string' },
        tpm: { type: 'string' },
        unit: { type: 'string' },
        amount: { type: 'string' },
        period: { type: 'string' },
        model: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string' },
        group: { type: 'string' },
        csv: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`sovra: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [cmd = 'serve', sub, arg] = positionals;
  try {
    switch (cmd) {
      case 'serve':
        return await serve(values.config);
      case 'keys':
        return await keys(sub, arg, values);
      case 'tenants':
        return await tenants(sub, arg, values);
      case 'admins':
        return await admins(sub, arg, values);
      case 'limits':
        return await limits(sub, positionals.slice(2), values);
      case 'budgets':
        return await budgets(sub, positionals.slice(2), values);
      case 'usage':
        return await usage(positionals.slice(1), values);
      case 'audit':
        return await audit(sub, arg, values);
      case 'config': {
        if (sub !== 'check') break;
        const file = arg || values.config || process.env['SOVRA_CONFIG'] || 'sovra.yaml';
        if (!existsSync(file)) throw new Error(`${file}: no such file`);
        const cfg = parseConfig(readFileSync(file, 'utf8'), file, process.env);
        process.stdout.write(`${file}: configuration is valid\n`);
        cfg.backends.forEach((b, i) => {
          if ((b.provider === 'openai-compatible' || b.provider === 'anthropic') && b.api_key_env && !process.env[b.api_key_env])
            process.stdout.write(`warning: backends[${i}].api_key_env: environment variable ${b.api_key_env} is not set here; backend ${b.id} will not be ready\n`);
        });
        return 0;
      }
    }
  } catch (e) {
    // Bad usage: the CLI's own checks, and invalid values that the shared validation (the admin
    // API's 400s) or the log library (a malformed vkey) refuse.
    if (e instanceof UsageError || (e instanceof GatewayError && e.status === 400) || (e instanceof TlogError && e.code === 'MALFORMED_VKEY')) {
      process.stderr.write(`sovra: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ConfigError) process.stderr.write(`sovra: ${e.message}\n`);
    else process.stderr.write(`sovra: ${(e as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`sovra: unknown command "${positionals.join(' ')}"\n\n${USAGE}`);
  return 2;
}

function load(file: string | undefined): LoadedConfig {
  const lc = loadConfig(file);
  if (lc.created) process.stderr.write(`sovra: created ${lc.path} with default settings; edit it to add engines and models.\n`);
  return lc;
}

const io: CliIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

async function openConfiguredStore(lc: LoadedConfig): Promise<Store> {
  const store = await openStore(resolveDatabaseUrl(lc.config.database.url, lc.dir), lc.config.database.schema ? { pgSchema: lc.config.database.schema } : {});
  try {
    await store.migrate();
  } catch (e) {
    await store.close();
    throw e;
  }
  return store;
}

/**
 * Appends an admin entry for a key action when the audit log is on (the entry is queued in the
 * database; the running server integrates it, or the next one at start-up).
 */
async function auditAdmin(lc: LoadedConfig, store: Store, action: string, target: string, before: unknown | null, after: unknown | null): Promise<void> {
  if (!lc.config.audit.enabled) return;
  const journal = new Journal(store);
  try {
    await recordAdminAction(journal, { actor: cliActor(), action, target, before, after });
  } catch (e) {
    throw new Error(`${action} ${target} was done but its audit entry could not be written: ${(e as Error).message}`, { cause: e });
  } finally {
    await journal.close();
  }
}

async function audit(sub: string | undefined, arg: string | undefined, values: AuditCliOptions & { config?: string | undefined }): Promise<number> {
  switch (sub) {
    case 'verify':
      if (!arg) throw new UsageError('audit verify needs the gateway URL, e.g. https://gw.example.com');
      return auditVerify(arg, values, io);
    case 'check-proof':
      if (!arg) throw new UsageError('audit check-proof needs a .tlog-proof FILE');
      return auditCheckProof(arg, values, io);
    case 'check-commitment':
      if (!arg) throw new UsageError('audit check-commitment needs an ENTRY_FILE (<id>.entry.json, from prove or open)');
      if (!values.salt) throw new UsageError("audit check-commitment needs --salt FILE (the entry's salt, as `sovra audit open` writes it)");
      if (!values.request && !values.response) throw new UsageError('audit check-commitment needs the bytes to check: --request FILE and/or --response FILE');
      return auditCheckCommitment(arg, values, io);
    case 'vkey':
    case 'prove':
    case 'open':
    case 'erase': {
      const lc = load(values.config);
      const store = await openConfiguredStore(lc);
      try {
        if (sub === 'vkey') {
          const kf = lc.config.audit.key_file;
          return await auditVkey(store, resolveConfigPath(kf, lc.dir), process.env, io);
        }
        if (!arg) throw new UsageError(`audit ${sub} needs a REQUEST_ID (the x-request-id of the request)`);
        if (sub === 'prove') return await auditProve(store, arg, values, io);
        if (sub === 'open') {
          const cr = lc.config.audit.content_retention;
          const keyFile = resolveConfigPath(cr.key_file, lc.dir);
          return await auditOpen(store, arg, () => loadContentKeyring(keyFile, process.env, { create: false }), values, io);
        }
        const eraseId = await eraseEntry(store, arg);
        io.out(`Erased: the commitment salt of ${arg} (and any retained content) is deleted; erasure entry ${eraseId} is queued (the running server integrates it within its checkpoint interval, or at its next start).\n`);
        return 0;
      } finally {
        await store.close();
      }
    }
    default:
      throw new UsageError('audit needs a subcommand: vkey | verify | prove | check-proof | erase | open | check-commitment');
  }
}

/** Options of the tenancy verbs. */
interface TenancyValues {
  config?: string | undefined;
  tenant?: string | undefined;
  name?: string | undefined;
  label?: string | undefined;
  models?: string | undefined;
  expires?: string | undefined;
  overlap?: string | undefined;
  role?: string | undefined;
  'display-name'?: string | undefined;
  jurisdiction?: string | undefined;
  classification?: string | undefined;
  json?: boolean | undefined;
}

/**
 * A duration such as `90s`, `30m`, `24h`, `7d` or plain seconds, in ms.
 * @throws Error for anything else
 */
export function parseDuration(s: string): number {
  const m = /^([0-9]{1,9})(s|m|h|d)?$/.exec(s.trim());
  if (!m) throw new UsageError(`invalid duration "${s}" (expected e.g. 90s, 30m, 24h, 7d)`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
}

/** An ISO 8601 date or date-time, in ms. @throws Error */
function parseIsoTime(s: string, what: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(ms)) throw new UsageError(`${what} must be an ISO 8601 date or date-time, e.g. 2030-01-31T00:00:00Z`);
  return ms;
}

/**
 * Runs `fn` with a change context for the CLI: actor `cli:<OS user>`, and a journal when the audit
 * log is on (entries are written before the change; see src/tenancy/audited.ts).
 */
async function withChanges<T>(lc: LoadedConfig, store: Store, fn: (cc: ChangeContext) => Promise<T>): Promise<T> {
  const journal = lc.config.audit.enabled ? new Journal(store) : null;
  try {
    return await fn({ store, journal, actor: cliActor() });
  } catch (e) {
    if (e instanceof GatewayError && e.code === 'audit_unavailable') throw new Error('nothing was changed: the audit entry could not be written', { cause: e });
    throw e;
  } finally {
    await journal?.close();
  }
}

async function tenantRef(store: Store, ref: string | undefined, verb: string): Promise<Tenant> {
  if (!ref) throw new UsageError(`${verb} needs a tenant ID or NAME (see \`sovra tenants list\`)`);
  const t = await findTenant(store, ref);
  if (!t) throw new Error(`no tenant with id or name "${ref}"`);
  return t;
}

function tenantAttrs(values: TenancyValues): TenantAttributesInput {
  const v = (x: string | undefined) => (x === undefined ? undefined : x.trim() === '' ? null : x);
  const a: TenantAttributesInput = {};
  const dn = v(values['display-name']);
  const j = v(values.jurisdiction);
  const c = v(values.classification);
  if (dn !== undefined) a.displayName = dn;
  if (j !== undefined) a.jurisdiction = j;
  if (c !== undefined) a.classification = c;
  return a;
}

function printTenant(t: Tenant): void {
  process.stdout.write(
    `id:             ${t.id}\nname:           ${t.name}\ndisplay name:   ${t.displayName ?? '-'}\njurisdiction:   ${t.jurisdiction ?? '-'}\n` +
      `classification: ${t.classification ?? '-'}\ncreated:        ${new Date(t.createdAt).toISOString()}\n`,
  );
}

async function tenants(sub: string | undefined, arg: string | undefined, values: TenancyValues): Promise<number> {
  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    switch (sub) {
      case 'create': {
        const name = arg ?? values.name;
        if (!name) throw new UsageError('tenants create needs a NAME');
        const t = await withChanges(lc, store, (cc) => createTenant(cc, { name, ...tenantAttrs(values) }));
        if (values.json) process.stdout.write(JSON.stringify(t) + '\n');
        else process.stdout.write(`Created tenant ${t.id} ("${t.name}").\n`);
        return 0;
      }
      case 'list': {
        const ts = await listTenants(store);
        if (values.json) {
          process.stdout.write(JSON.stringify(ts) + '\n');
          return 0;
        }
        process.stdout.write(['ID', 'NAME', 'DISPLAY NAME', 'JURISDICTION', 'CLASSIFICATION', 'CREATED'].join('\t') + '\n');
        for (const t of ts)
          process.stdout.write([t.id, t.name, t.displayName ?? '-', t.jurisdiction ?? '-', t.classification ?? '-', new Date(t.createdAt).toISOString()].join('\t') + '\n');
        return 0;
      }
      case 'show': {
        const t = await tenantRef(store, arg, 'tenants show');
        if (values.json) process.stdout.write(JSON.stringify(t) + '\n');
        else printTenant(t);
        return 0;
      }
      case 'update': {
        const t0 = await tenantRef(store, arg, 'tenants update');
        const attrs = tenantAttrs(values);
        if (Object.keys(attrs).length === 0) throw new UsageError('tenants update needs --display-name, --jurisdiction and/or --classification');
        const t = await withChanges(lc, store, (cc) => updateTenant(cc, t0.id, attrs));
        if (values.json) process.stdout.write(JSON.stringify(t) + '\n');
        else printTenant(t);
        return 0;
      }
      default:
        throw new UsageError('tenants needs a subcommand: create | list | show | update');
    }
  } finally {
    await store.close();
  }
}

async function admins(sub: string | undefined, arg: string | undefined, values: TenancyValues): Promise<number> {
  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    switch (sub) {
      case 'create': {
        if (!values.role) throw new UsageError('admins create needs --role platform-admin|tenant-admin|auditor');
        const tenantId = values.tenant ? (await tenantRef(store, values.tenant, 'admins create --tenant')).id : null;
        const { admin, secret } = await withChanges(lc, store, (cc) => createAdmin(cc, { role: values.role!, tenantId, name: values.name ?? null }));
        if (values.json) process.stdout.write(JSON.stringify({ ...admin, key: secret }) + '\n');
        else
          process.stdout.write(
            `Created ${admin.role} ${admin.id}${admin.name ? ` (${admin.name})` : ''}${admin.tenantId ? ` for tenant ${admin.tenantId}` : ''}.\n` +
              `Store its admin key now; it will not be shown again:\n\n  ${secret}\n\n` +
              `Use it as 'Authorization: Bearer <admin key>' on /admin/v1/… (e.g. GET /admin/v1/whoami).\n`,
          );
        return 0;
      }
      case 'list': {
        const as = await listAdmins(store);
        if (values.json) {
          process.stdout.write(JSON.stringify(as) + '\n');
          return 0;
        }
        process.stdout.write(['ID', 'ROLE', 'TENANT', 'NAME', 'PREFIX', 'CREATED', 'STATE'].join('\t') + '\n');
        for (const a of as)
          process.stdout.write(
            [a.id, a.role, a.tenantId ?? '-', a.name ?? '-', a.prefix + '…', new Date(a.createdAt).toISOString(), a.revokedAt ? `revoked ${new Date(a.revokedAt).toISOString()}` : 'active'].join('\t') + '\n',
          );
        return 0;
      }
      case 'revoke': {
        if (!arg) throw new UsageError('admins revoke needs an admin ID (see `sovra admins list`)');
        await withChanges(lc, store, (cc) => revokeAdmin(cc, arg));
        process.stdout.write(`Revoked admin ${arg}.\n`);
        return 0;
      }
      default:
        throw new UsageError('admins needs a subcommand: create | list | revoke');
    }
  } finally {
    await store.close();
  }
}

async function keys(sub: string | undefined, arg: string | undefined, values: TenancyValues): Promise<number> {
  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    switch (sub) {
      case 'create': {
        if (!values.tenant) throw new UsageError('keys create needs --tenant NAME');
        const label = values.label ?? values.name;
        const modelAllowlist = values.models === undefined ? null : validateAllowlist(values.models.split(',').map((m) => m.trim()).filter((m) => m !== ''));
        const expiresAt = values.expires === undefined ? null : parseIsoTime(values.expires, '--expires');
        if (expiresAt !== null && expiresAt <= Date.now()) throw new Error('--expires must be in the future');
        // `--tenant` is a name (created if missing, as before) or the id of an existing tenant.
        const byId = values.tenant.startsWith('ten_') ? await findTenant(store, values.tenant) : null;
        const k = await createKey(store, { tenant: byId?.name ?? values.tenant, ...(label ? { name: label } : {}), modelAllowlist, expiresAt });
        await auditAdmin(lc, store, 'keys.create', k.id, null, await apiKeyState(store, k.id));
        if (values.json) process.stdout.write(JSON.stringify({ id: k.id, tenant: k.tenant, name: k.name, key: k.key }) + '\n');
        else
          process.stdout.write(
            `Created key ${k.id} for tenant "${k.tenant}"${k.name ? ` (${k.name})` : ''}.\n` +
              `Store it now; it will not be shown again:\n\n  ${k.key}\n\n`,
          );
        return 0;
      }
      case 'list': {
        const rows = await listKeys(store);
        if (values.json) {
          process.stdout.write(JSON.stringify(rows) + '\n');
          return 0;
        }
        process.stdout.write(['ID', 'TENANT', 'NAME', 'PREFIX', 'CREATED', 'STATE'].join('\t') + '\n');
        for (const r of rows)
          process.stdout.write(
            [r.id, r.tenant, r.name ?? '-', r.prefix + '…', new Date(r.createdAt).toISOString(), keyState(r, Date.now())].join('\t') + '\n',
          );
        return 0;
      }
      case 'revoke': {
        if (!arg) throw new UsageError('keys revoke needs a key ID (see `sovra keys list`)');
        const before = await apiKeyState(store, arg);
        const ok = await revokeKey(store, arg);
        if (!ok) throw new Error(`no active key with id ${arg}`);
        await auditAdmin(lc, store, 'keys.revoke', arg, before, await apiKeyState(store, arg));
        process.stdout.write(`Revoked key ${arg}.\n`);
        return 0;
      }
      case 'rotate': {
        if (!arg) throw new UsageError('keys rotate needs a key ID (see `sovra keys list`)');
        const overlapMs = parseDuration(values.overlap ?? '24h');
        const r = await withChanges(lc, store, (cc) => rotateApiKey(cc, arg, overlapMs));
        if (values.json) process.stdout.write(JSON.stringify({ id: r.apiKey.id, key: r.secret, previous: r.previous.id, previousExpiresAt: r.previous.expiresAt }) + '\n');
        else
          process.stdout.write(
            `Rotated key ${arg}: new key ${r.apiKey.id}. The old key stops working at ${new Date(r.previous.expiresAt!).toISOString()}.\n` +
              `Store the new key now; it will not be shown again:\n\n  ${r.secret}\n\n`,
          );
        return 0;
      }
      default:
        throw new UsageError('keys needs a subcommand: create | list | revoke | rotate');
    }
  } finally {
    await store.close();
  }
}

// ------------------------------------------------------------------------------------------------
// Metering: rate limits, budgets and usage — the CLI side of /admin/v1/limits, /budgets and /usage,
// with the same validation; every change is one admin audit entry (auditedChange / auditedCreate).
// ------------------------------------------------------------------------------------------------

/** Bad usage of the command line (a missing, conflicting or malformed option): exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Options of the metering verbs (`limits`, `budgets`, `usage`). */
interface MeteringValues extends TenancyValues {
  key?: string | undefined;
  rpm?: string | undefined;
  tpm?: string | undefined;
  unit?: string | undefined;
  amount?: string | undefined;
  period?: string | undefined;
  model?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  group?: string | undefined;
  csv?: boolean | undefined;
}

/** A `--tenant` / `--key` choice, checked before the store is opened. */
interface ScopeOption {
  kind: 'tenant' | 'key';
  ref: string;
}

/** @throws UsageError when a verb got positional arguments it does not take */
function noExtraArgs(verb: string, extra: string[]): void {
  if (extra.length > 0) throw new UsageError(`${verb}: unexpected argument "${extra[0]}"`);
}

/** @throws UsageError when one of the named options was given as an empty string */
function nonEmptyOptions(values: MeteringValues, names: Array<'tenant' | 'key' | 'model'>): void {
  for (const n of names) if (values[n] !== undefined && values[n]!.trim() === '') throw new UsageError(`--${n} needs a value`);
}

/**
 * `--tenant ID|NAME` or `--key KEY_ID`, exactly one of them.
 * @throws UsageError when both or neither are given, or `--key` is given a key instead of its id
 */
function scopeOption(values: MeteringValues, verb: string): ScopeOption {
  nonEmptyOptions(values, ['tenant', 'key']);
  if (values.tenant !== undefined && values.key !== undefined) throw new UsageError(`${verb}: give either --tenant or --key, not both`);
  if (values.tenant !== undefined) return { kind: 'tenant', ref: values.tenant };
  if (values.key !== undefined) return { kind: 'key', ref: checkKeyId(values.key) };
  throw new UsageError(`${verb} needs --tenant ID|NAME or --key KEY_ID`);
}

/** `--key` takes a key id (`key_…`), never the secret key itself (which must not be echoed). @throws UsageError */
function checkKeyId(ref: string): string {
  if (ref.trim().startsWith('sk-sovra-')) throw new UsageError('--key takes the key id (key_…, see `sovra keys list`), not the key itself');
  return ref.trim();
}

/** `active`, `active until <ISO>` (expiry ahead), `expired <ISO>` or `revoked <ISO>`, at `now` (ms). */
function keyState(k: { revokedAt: number | null; expiresAt: number | null }, now: number): string {
  if (k.revokedAt !== null) return `revoked ${new Date(k.revokedAt).toISOString()}`;
  if (k.expiresAt !== null) return k.expiresAt <= now ? `expired ${new Date(k.expiresAt).toISOString()}` : `active until ${new Date(k.expiresAt).toISOString()}`;
  return 'active';
}

/** The API key with this id (revoked and expired keys included). @throws Error when there is none */
async function keyRef(store: Store, id: string): Promise<ApiKey> {
  const k = await getApiKey(store, id);
  if (!k) throw new Error(`no API key with id "${id}" (see \`sovra keys list\`)`);
  return k;
}

/** Resolves a scope option: a tenant by id or name, a key by id. @throws Error when it does not exist */
async function resolveScope(store: Store, s: ScopeOption, verb: string): Promise<{ scope: Scope; label: string }> {
  if (s.kind === 'tenant') {
    const t = await tenantRef(store, s.ref, verb);
    return { scope: { kind: 'tenant', id: t.id }, label: `tenant ${t.id} ("${t.name}")` };
  }
  const k = await keyRef(store, s.ref);
  return { scope: { kind: 'key', id: k.id }, label: `key ${k.id} (tenant ${k.tenantId})` };
}

/**
 * A rate-limit option: an integer ≥ 0 (0 blocks every request), or null (unlimited) for '' or `none`.
 * @throws UsageError for anything else
 */
function parseLimitValue(v: string, option: string): number | null {
  const t = v.trim();
  if (t === '' || t.toLowerCase() === 'none') return null;
  const n = /^[0-9]{1,16}$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${option} must be an integer >= 0, or '' / none to remove it (got "${v}")`);
  return n;
}

/** A budget amount: an integer ≥ 0 (as the admin API; 0 blocks every request). @throws UsageError */
function parseAmount(v: string | undefined): number {
  if (v === undefined) throw new UsageError('budgets create needs --amount N (an integer >= 0: tokens, or micro-USD for --unit usd_micros)');
  const t = v.trim();
  const n = /^[0-9]{1,16}$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`--amount must be an integer >= 0 (tokens, or micro-USD for usd_micros: 1 USD = 1000000), got "${v}"`);
  return n;
}

/**
 * A usage bound, as the admin API's `from` / `to`: ms since the epoch or an RFC 3339 date-time with
 * its offset; the CLI also takes a plain date (`2025-06-01`, UTC midnight).
 * @throws UsageError for anything else (a date-time without an offset is ambiguous)
 */
function parseBound(v: string, option: string): number {
  const ms = parseUsageBound(v.trim(), { plainDate: true });
  if (!Number.isFinite(ms))
    throw new UsageError(`${option} must be a date (2025-06-01, UTC), an RFC 3339 date-time with offset (2025-06-01T13:00:00Z) or ms since the epoch (got "${v}")`);
  return ms;
}

/** A limit for display. */
const limitText = (n: number | null): string => (n === null ? 'unlimited' : String(n));

/** An amount in its unit, for display. */
function amountText(unit: BudgetUnit, n: number): string {
  return unit === 'tokens' ? `${n} tokens` : `${n} micro-USD (${(n / 1e6).toFixed(6)} USD)`;
}

const PERIOD_TEXT: Record<BudgetPeriod, string> = { day: 'per UTC day', month: 'per UTC month', fixed: 'in total (fixed, never resets)' };

/** A table cell: control characters (from client-chosen model names) are escaped, never sent to the terminal. */
function cell(v: string | number | null): string {
  if (v === null) return '-';
  return String(v).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

async function limits(sub: string | undefined, rest: string[], values: MeteringValues): Promise<number> {
  if (sub !== 'set' && sub !== 'show' && sub !== 'list') throw new UsageError('limits needs a subcommand: set | show | list');
  noExtraArgs(`limits ${sub}`, rest);
  // Everything that can be checked without the database is checked first (no config file is created for bad usage).
  let so: ScopeOption | undefined;
  const patch: Partial<LimitSpec> = {};
  if (sub === 'list') {
    nonEmptyOptions(values, ['tenant']);
    if (values.key !== undefined) throw new UsageError('limits list takes --tenant only; `limits show --key KEY_ID` shows the limits of one key');
  } else so = scopeOption(values, `limits ${sub}`);
  if (sub === 'set') {
    if (values.rpm === undefined && values.tpm === undefined) throw new UsageError("limits set needs --rpm N and/or --tpm N ('' or none removes a limit)");
    if (values.rpm !== undefined) patch.rpm = parseLimitValue(values.rpm, '--rpm');
    if (values.tpm !== undefined) patch.tpm = parseLimitValue(values.tpm, '--tpm');
  } else if (values.rpm !== undefined || values.tpm !== undefined) throw new UsageError(`limits ${sub} takes no --rpm / --tpm (see \`limits set\`)`);

  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    if (sub === 'list') {
      const tenantId = values.tenant === undefined ? undefined : (await tenantRef(store, values.tenant, 'limits list --tenant')).id;
      const rows = await listLimits(store, tenantId === undefined ? {} : { tenantId });
      if (values.json) {
        process.stdout.write(JSON.stringify(rows) + '\n');
        return 0;
      }
      process.stdout.write(['KIND', 'ID', 'RPM', 'TPM'].join('\t') + '\n');
      for (const r of rows) process.stdout.write([r.scope.kind, r.scope.id, limitText(r.rpm), limitText(r.tpm)].join('\t') + '\n');
      return 0;
    }
    const { scope, label } = await resolveScope(store, so!, `limits ${sub}`);
    if (sub === 'show') {
      const l = await getLimits(store, scope);
      if (values.json) process.stdout.write(JSON.stringify({ scope, ...l }) + '\n');
      else process.stdout.write(`scope: ${label}\nrpm:   ${limitText(l.rpm)}\ntpm:   ${limitText(l.tpm)}\n`);
      return 0;
    }
    // set: an option left out keeps its current value; the entry holds the whole state before and after.
    const after = await withChanges(lc, store, (cc) =>
      auditedChange(cc, async () => {
        const before = await getLimits(cc.store, scope);
        const spec: LimitSpec = { rpm: patch.rpm !== undefined ? patch.rpm : before.rpm, tpm: patch.tpm !== undefined ? patch.tpm : before.tpm };
        return {
          action: 'limits.set',
          target: scope.id,
          before: { scope, ...before },
          after: { scope, ...spec },
          current: async () => ({ scope, ...(await getLimits(cc.store, scope)) }),
          apply: async () => (await setLimits(cc.store, scope, spec)).after,
        };
      }),
    );
    if (values.json) process.stdout.write(JSON.stringify({ scope, ...after }) + '\n');
    else process.stdout.write(`Set the rate limits of ${label}: rpm ${limitText(after.rpm)}, tpm ${limitText(after.tpm)}.\n`);
    return 0;
  } finally {
    await store.close();
  }
}

async function budgets(sub: string | undefined, rest: string[], values: MeteringValues): Promise<number> {
  if (sub !== 'create' && sub !== 'list' && sub !== 'delete') throw new UsageError('budgets needs a subcommand: create | list | delete');
  let id: string | undefined;
  if (sub === 'delete') {
    id = rest[0]?.trim();
    if (!id) throw new UsageError('budgets delete needs a budget ID (see `sovra budgets list`)');
    noExtraArgs('budgets delete', rest.slice(1));
  } else noExtraArgs(`budgets ${sub}`, rest);
  let so: ScopeOption | undefined;
  let unit: BudgetUnit | undefined;
  let period: BudgetPeriod | undefined;
  let amount = 0;
  if (sub === 'create') {
    so = scopeOption(values, 'budgets create');
    if (values.unit === undefined) throw new UsageError(`budgets create needs --unit ${BUDGET_UNITS.join('|')}`);
    if (!BUDGET_UNITS.includes(values.unit as BudgetUnit)) throw new UsageError(`--unit must be one of ${BUDGET_UNITS.join(', ')} (got "${values.unit}")`);
    unit = values.unit as BudgetUnit;
    amount = parseAmount(values.amount);
    if (values.period === undefined) throw new UsageError(`budgets create needs --period ${BUDGET_PERIODS.join('|')}`);
    if (!BUDGET_PERIODS.includes(values.period as BudgetPeriod)) throw new UsageError(`--period must be one of ${BUDGET_PERIODS.join(', ')} (got "${values.period}")`);
    period = values.period as BudgetPeriod;
  } else if (sub === 'list') {
    nonEmptyOptions(values, ['tenant', 'key']);
    if (values.key !== undefined) checkKeyId(values.key);
  }

  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    switch (sub) {
      case 'create': {
        const { scope, label } = await resolveScope(store, so!, 'budgets create');
        const made = await withChanges(lc, store, (cc) =>
          auditedCreate(cc, {
            action: 'budgets.create',
            create: () => createBudget(cc.store, { scope, unit: unit!, amount, period: period! }),
            target: (b) => b.id,
            state: (b) => b,
            undo: (b) => deleteBudget(cc.store, b.id),
          }),
        );
        const state = (await listBudgets(store, { scopes: [scope] })).find((b) => b.id === made.id) ?? made;
        if (values.json) process.stdout.write(JSON.stringify(state) + '\n');
        else process.stdout.write(`Created budget ${made.id} for ${label}: ${amountText(made.unit, made.amount)} ${PERIOD_TEXT[made.period]}.\n`);
        return 0;
      }
      case 'list': {
        // As GET /admin/v1/budgets: a key's own budgets; a tenant's and those of its keys; or all.
        let scopes: Scope[] | undefined;
        if (values.key !== undefined) {
          const k = await keyRef(store, values.key.trim());
          if (values.tenant !== undefined) {
            const t = await tenantRef(store, values.tenant, 'budgets list --tenant');
            if (t.id !== k.tenantId) throw new Error(`key ${k.id} does not belong to tenant ${t.id} ("${t.name}")`);
          }
          scopes = [{ kind: 'key', id: k.id }];
        } else if (values.tenant !== undefined) {
          const t = await tenantRef(store, values.tenant, 'budgets list --tenant');
          scopes = [{ kind: 'tenant', id: t.id }, ...(await listApiKeys(store, { tenantId: t.id })).map((k): Scope => ({ kind: 'key', id: k.id }))];
        }
        const bs = await listBudgets(store, scopes ? { scopes } : {});
        if (values.json) {
          process.stdout.write(JSON.stringify(bs) + '\n');
          return 0;
        }
        process.stdout.write(['ID', 'SCOPE', 'UNIT', 'AMOUNT', 'PERIOD', 'PERIOD START', 'USED', 'RESERVED'].join('\t') + '\n');
        for (const b of bs) process.stdout.write(budgetRow(b).join('\t') + '\n');
        return 0;
      }
      case 'delete': {
        const budgetId = id!;
        await withChanges(lc, store, (cc) =>
          auditedChange(cc, async () => {
            const found = (await listBudgets(cc.store)).find((b) => b.id === budgetId);
            if (!found) throw new Error(`no budget with id "${budgetId}" (see \`sovra budgets list\`)`);
            const { periodStart: _ps, used: _u, reserved: _r, ...budget } = found;
            return {
              action: 'budgets.delete',
              target: budgetId,
              before: budget,
              after: null,
              apply: async () => {
                if (!(await deleteBudget(cc.store, budgetId))) throw new Error(`no budget with id "${budgetId}"`);
              },
            };
          }),
        );
        if (values.json) process.stdout.write(JSON.stringify({ id: budgetId, deleted: true }) + '\n');
        else process.stdout.write(`Deleted budget ${budgetId}.\n`);
        return 0;
      }
    }
  } finally {
    await store.close();
  }
}

/** One `budgets list` table row. */
function budgetRow(b: BudgetState): string[] {
  return [
    b.id,
    `${b.scope.kind}:${b.scope.id}`,
    b.unit,
    String(b.amount),
    b.period,
    b.period === 'fixed' ? '-' : new Date(b.periodStart).toISOString(),
    String(b.used),
    String(b.reserved),
  ];
}

async function usage(rest: string[], values: MeteringValues): Promise<number> {
  noExtraArgs('usage', rest);
  nonEmptyOptions(values, ['tenant', 'key', 'model']);
  if (values.key !== undefined) checkKeyId(values.key);
  const group = values.group ?? 'none';
  if (group !== 'hour' && group !== 'day' && group !== 'none') throw new UsageError(`--group must be hour, day or none (got "${group}")`);
  if (values.csv && values.json) throw new UsageError('usage: give --csv or --json, not both');
  const from = values.from === undefined ? undefined : parseBound(values.from, '--from');
  const to = values.to === undefined ? undefined : parseBound(values.to, '--to');

  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    // As GET /admin/v1/usage: the tenant and the key must exist; the filters are combined.
    const tenantId = values.tenant === undefined ? undefined : (await tenantRef(store, values.tenant, 'usage --tenant')).id;
    const keyId = values.key === undefined ? undefined : (await keyRef(store, values.key.trim())).id;
    const filter: UsageFilter = { groupBy: group };
    if (tenantId !== undefined) filter.tenantId = tenantId;
    if (keyId !== undefined) filter.keyId = keyId;
    if (values.model !== undefined) filter.model = values.model;
    if (from !== undefined) filter.from = from;
    if (to !== undefined) filter.to = to;
    const rows = await queryUsage(store, filter);
    if (values.csv) process.stdout.write(usageCsv(rows));
    else if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
    else {
      process.stdout.write(['BUCKET', 'TENANT', 'KEY', 'MODEL', 'REQUESTS', 'PROMPT TOKENS', 'COMPLETION TOKENS', 'TOTAL TOKENS', 'COST MICRO-USD', 'ERRORS'].join('\t') + '\n');
      for (const r of rows) process.stdout.write(usageRow(r).join('\t') + '\n');
    }
    return 0;
  } finally {
    await store.close();
  }
}

/** One `usage` table row. */
function usageRow(r: UsageRow): string[] {
  return [
    r.bucket === null ? '-' : new Date(r.bucket).toISOString(),
    cell(r.tenant_id),
    cell(r.key_id),
    cell(r.model),
    ...[r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost_micros, r.errors].map(String),
  ];
}

async function serve(configFile: string | undefined): Promise<number> {
  const lc = load(configFile);
  const gw = await createGateway({ config: lc.config, configDir: lc.dir, configPath: lc.path });
  const log = gw.logger;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    await gw.close().catch((err: unknown) => log.error({ err }, 'error during shutdown'));
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));

  let url: string;
  try {
    url = await gw.start();
  } catch (e) {
    await gw.close().catch(() => undefined);
    throw e;
  }
  log.info({ url, config: lc.path }, `Sovra listening on ${url}`);
  const existing = await listKeys(gw.store());
  if (existing.length === 0 && process.env['SOVRA_BOOTSTRAP_KEY'] !== '0') {
    const k = await createKey(gw.store(), { tenant: 'default', name: 'bootstrap' });
    if (lc.config.audit.enabled)
      await recordAdminAction(gw.recorder(), { actor: 'server:bootstrap', action: 'keys.create', target: k.id, before: null, after: await apiKeyState(gw.store(), k.id) });
    process.stderr.write(
      `\nNo API keys existed, so Sovra created one for tenant "default" (shown only this once):\n\n  ${k.key}\n\n` +
        `Try it:\n  curl ${url}/v1/chat/completions -H "Authorization: Bearer ${k.key}" \\\n` +
        `    -H "content-type: application/json" -d '{"model":"${lc.config.models[0]?.name ?? 'MODEL'}","stream":true,"messages":[{"role":"user","content":"Tell me about Mr. Darcy."}]}'\n\n` +
        `More keys: npm run sovra -- keys create --tenant NAME\n\n`,
    );
  }
  // Hot reload: SIGHUP, or an edit of the file (debounced; an invalid file is rejected, the old one kept).
  const reload = (why: string) =>
    gw.reload(undefined, `server:${why}`).catch((err: unknown) => log.error(`reload (${why}) rejected; the running configuration is kept: ${(err as Error).message}`));
  process.on('SIGHUP', () => void reload('sighup'));
  watchConfig(lc.path, () => void reload('file-change'));
  await gw.backendsSettled();
  return new Promise<number>(() => undefined); // serve until a signal
}

/**
 * Calls `onChange` (debounced 300 ms) when the file's contents change. Watches the folder, so that
 * editors that replace the file (write + rename) are seen too. Never throws: a platform without
 * file watching simply relies on SIGHUP.
 */
function watchConfig(path: string, onChange: () => void): void {
  let timer: NodeJS.Timeout | undefined;
  let last = safeRead(path);
  try {
    const w = watch(dirname(path), (_ev, name) => {
      if (name !== null && name !== basename(path)) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        const now = safeRead(path);
        if (now === null || now === last) return;
        last = now;
        onChange();
      }, 300);
      timer.unref();
    });
    w.unref();
  } catch {
    /* no watching: SIGHUP still works */
  }
}

function safeRead(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}
