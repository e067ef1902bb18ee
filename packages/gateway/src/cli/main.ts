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
 *   sovra config check [FILE]                     validate a configuration file
 *   sovra audit vkey | verify | prove | check-proof | erase   transparency log (src/audit/cli.ts)
 *
 * Common option: --config FILE (default: $SOVRA_CONFIG or ./sovra.yaml).
 */
import { parseArgs } from 'node:util';
import { existsSync, watch } from 'node:fs';
import { ConfigError, loadConfig, parseConfig, resolveDatabaseUrl, type LoadedConfig } from '../config/load.ts';
import { createGateway } from '../app.ts';
import { openStore } from '../store/db.ts';
import { createKey, listKeys, revokeKey } from '../keys/keys.ts';
import { readFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { Journal } from '../audit/journal.ts';
import { apiKeyState, cliActor, recordAdminAction } from '../audit/admin.ts';
import { auditCheckProof, auditProve, auditVerify, auditVkey, eraseEntry, type CliIo } from '../audit/cli.ts';
import type { Store } from '../store/db.ts';
import { GatewayError } from '../http/errors.ts';
import {
  createAdmin,
  createTenant,
  findTenant,
  listAdmins,
  listTenants,
  revokeAdmin,
  rotateApiKey,
  updateTenant,
  validateAllowlist,
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
  config check [FILE]                       validate a configuration file
  audit vkey                                print the transparency log's verifier key
  audit verify URL --vkey KEY [--prev FILE] [--full] [--save FILE]
                                            verify a log over HTTP (exit 3: fork or rollback)
  audit prove REQUEST_ID [--out DIR]        write <id>.tlog-proof and <id>.entry.json
  audit check-proof FILE --vkey KEY [--entry FILE]
                                            check an offline proof (no network)
  audit erase REQUEST_ID                    delete an entry's commitment salt; log the erasure

options:
  --config FILE   configuration file (default: $SOVRA_CONFIG or ./sovra.yaml)
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

async function audit(sub: string | undefined, arg: string | undefined, values: { config?: string | undefined; vkey?: string | undefined; prev?: string | undefined; full?: boolean | undefined; save?: string | undefined; out?: string | undefined; entry?: string | undefined }): Promise<number> {
  switch (sub) {
    case 'verify':
      if (!arg) throw new Error('audit verify needs the gateway URL, e.g. https://gw.example.com');
      return auditVerify(arg, values, io);
    case 'check-proof':
      if (!arg) throw new Error('audit check-proof needs a .tlog-proof FILE');
      return auditCheckProof(arg, values, io);
    case 'vkey':
    case 'prove':
    case 'erase': {
      const lc = load(values.config);
      const store = await openConfiguredStore(lc);
      try {
        if (sub === 'vkey') {
          const kf = lc.config.audit.key_file;
          return await auditVkey(store, isAbsolute(kf) ? kf : resolve(lc.dir, kf), process.env, io);
        }
        if (!arg) throw new Error(`audit ${sub} needs a REQUEST_ID (the x-request-id of the request)`);
        if (sub === 'prove') return await auditProve(store, arg, values, io);
        const eraseId = await eraseEntry(store, arg);
        io.out(`Erased: the commitment salt of ${arg} is deleted; erasure entry ${eraseId} is queued (the running server integrates it within its checkpoint interval, or at its next start).\n`);
        return 0;
      } finally {
        await store.close();
      }
    }
    default:
      throw new Error('audit needs a subcommand: vkey | verify | prove | check-proof | erase');
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
  if (!m) throw new Error(`invalid duration "${s}" (expected e.g. 90s, 30m, 24h, 7d)`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
}

/** An ISO 8601 date or date-time, in ms. @throws Error */
function parseIsoTime(s: string, what: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(ms)) throw new Error(`${what} must be an ISO 8601 date or date-time, e.g. 2030-01-31T00:00:00Z`);
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
  if (!ref) throw new Error(`${verb} needs a tenant ID or NAME (see \`sovra tenants list\`)`);
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
        if (!name) throw new Error('tenants create needs a NAME');
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
        if (Object.keys(attrs).length === 0) throw new Error('tenants update needs --display-name, --jurisdiction and/or --classification');
        const t = await withChanges(lc, store, (cc) => updateTenant(cc, t0.id, attrs));
        if (values.json) process.stdout.write(JSON.stringify(t) + '\n');
        else printTenant(t);
        return 0;
      }
      default:
        throw new Error('tenants needs a subcommand: create | list | show | update');
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
        if (!values.role) throw new Error('admins create needs --role platform-admin|tenant-admin|auditor');
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
        if (!arg) throw new Error('admins revoke needs an admin ID (see `sovra admins list`)');
        await withChanges(lc, store, (cc) => revokeAdmin(cc, arg));
        process.stdout.write(`Revoked admin ${arg}.\n`);
        return 0;
      }
      default:
        throw new Error('admins needs a subcommand: create | list | revoke');
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
        if (!values.tenant) throw new Error('keys create needs --tenant NAME');
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
            [r.id, r.tenant, r.name ?? '-', r.prefix + '…', new Date(r.createdAt).toISOString(), r.revokedAt ? `revoked ${new Date(r.revokedAt).toISOString()}` : 'active'].join('\t') + '\n',
          );
        return 0;
      }
      case 'revoke': {
        if (!arg) throw new Error('keys revoke needs a key ID (see `sovra keys list`)');
        const before = await apiKeyState(store, arg);
        const ok = await revokeKey(store, arg);
        if (!ok) throw new Error(`no active key with id ${arg}`);
        await auditAdmin(lc, store, 'keys.revoke', arg, before, await apiKeyState(store, arg));
        process.stdout.write(`Revoked key ${arg}.\n`);
        return 0;
      }
      case 'rotate': {
        if (!arg) throw new Error('keys rotate needs a key ID (see `sovra keys list`)');
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
        throw new Error('keys needs a subcommand: create | list | revoke | rotate');
    }
  } finally {
    await store.close();
  }
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
