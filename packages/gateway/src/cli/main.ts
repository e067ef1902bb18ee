/**
 * The `sovra` command line.
 *
 *   sovra serve                                   run the gateway (default command)
 *   sovra keys create --tenant NAME [--name LABEL] print a new API key once
 *   sovra keys list                               list keys (never the key or its digest)
 *   sovra keys revoke ID                          revoke a key
 *   sovra config check [FILE]                     validate a configuration file
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

const USAGE = `usage: sovra <command> [options]

commands:
  serve                                     run the gateway (default)
  keys create --tenant NAME [--name LABEL]  create an API key; it is printed once
  keys list                                 list API keys (id, tenant, label, prefix, state)
  keys revoke ID                            revoke an API key
  config check [FILE]                       validate a configuration file

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
      case 'config': {
        if (sub !== 'check') break;
        const file = arg || values.config || process.env['SOVRA_CONFIG'] || 'sovra.yaml';
        if (!existsSync(file)) throw new Error(`${file}: no such file`);
        parseConfig(readFileSync(file, 'utf8'), file, process.env);
        process.stdout.write(`${file}: configuration is valid\n`);
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

async function keys(sub: string | undefined, arg: string | undefined, values: { config?: string | undefined; tenant?: string | undefined; name?: string | undefined; json?: boolean | undefined }): Promise<number> {
  const lc = load(values.config);
  const store = await openStore(resolveDatabaseUrl(lc.config.database.url, lc.dir), lc.config.database.schema ? { pgSchema: lc.config.database.schema } : {});
  try {
    await store.migrate();
    switch (sub) {
      case 'create': {
        if (!values.tenant) throw new Error('keys create needs --tenant NAME');
        const k = await createKey(store, { tenant: values.tenant, ...(values.name ? { name: values.name } : {}) });
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
        const ok = await revokeKey(store, arg);
        if (!ok) throw new Error(`no active key with id ${arg}`);
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

  const url = await gw.start();
  log.info({ url, config: lc.path }, `Sovra listening on ${url}`);
  const existing = await listKeys(gw.store());
  if (existing.length === 0 && process.env['SOVRA_BOOTSTRAP_KEY'] !== '0') {
    const k = await createKey(gw.store(), { tenant: 'default', name: 'bootstrap' });
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
