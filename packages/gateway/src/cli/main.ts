/**
 * The `sovra` command line.
 *
 *   sovra serve                                   run the gateway (default command)
 *   sovra keys create --tenant NAME [--name LABEL] print a new API key once
 *   sovra keys list                               list keys (never the key or its digest)
 *   sovra keys revoke ID                          revoke a key
 *   sovra config check [FILE]                     validate a configuration file
 *   sovra audit vkey | verify | prove | check-proof | erase   transparency log (src/audit/cli.ts)
 *
 * Common option: --config FILE (default: $SOVRA_CONFIG or ./sovra.yaml).
 */
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig, parseConfig, resolveDatabaseUrl, type LoadedConfig } from '../config/load.ts';
import { createGateway } from '../app.ts';
import { openStore } from '../store/db.ts';
import { createKey, listKeys, revokeKey } from '../keys/keys.ts';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { Journal } from '../audit/journal.ts';
import { apiKeyState, cliActor, recordAdminAction } from '../audit/admin.ts';
import { auditCheckProof, auditProve, auditVerify, auditVkey, eraseEntry, type CliIo } from '../audit/cli.ts';
import type { Store } from '../store/db.ts';

const USAGE = `usage: sovra <command> [options]

commands:
  serve                                     run the gateway (default)
  keys create --tenant NAME [--name LABEL]  create an API key; it is printed once
  keys list                                 list API keys (id, tenant, label, prefix, state)
  keys revoke ID                            revoke an API key
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
      case 'audit':
        return await audit(sub, arg, values);
      case 'config': {
        if (sub !== 'check') break;
        const file = arg || values.config || process.env['SOVRA_CONFIG'] || 'sovra.yaml';
        if (!existsSync(file)) throw new Error(`${file}: no such file`);
        const cfg = parseConfig(readFileSync(file, 'utf8'), file, process.env);
        process.stdout.write(`${file}: configuration is valid\n`);
        cfg.backends.forEach((b, i) => {
          if (b.provider === 'openai-compatible' && b.api_key_env && !process.env[b.api_key_env])
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

async function keys(sub: string | undefined, arg: string | undefined, values: { config?: string | undefined; tenant?: string | undefined; name?: string | undefined; json?: boolean | undefined }): Promise<number> {
  const lc = load(values.config);
  const store = await openConfiguredStore(lc);
  try {
    switch (sub) {
      case 'create': {
        if (!values.tenant) throw new Error('keys create needs --tenant NAME');
        const k = await createKey(store, { tenant: values.tenant, ...(values.name ? { name: values.name } : {}) });
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
      default:
        throw new Error('keys needs a subcommand: create | list | revoke');
    }
  } finally {
    await store.close();
  }
}

async function serve(configFile: string | undefined): Promise<number> {
  const lc = load(configFile);
  const gw = await createGateway({ config: lc.config, configDir: lc.dir });
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
  await gw.backendsSettled();
  return new Promise<number>(() => undefined); // serve until a signal
}
