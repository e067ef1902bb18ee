/**
 * Test harness: start a real Sovra gateway (HTTP on 127.0.0.1, port 0) with a given configuration,
 * a fresh SQLite database in a temp folder (or a fresh PostgreSQL schema when `postgres: true` and
 * SOVRA_TEST_POSTGRES_URL is set), one API key, and every log line captured.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { createGateway, type Gateway } from '../../src/app.ts';
import { createKey } from '../../src/keys/keys.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { listRequests } from '../../src/store/requests.ts';
import type { RequestsTable } from '../../src/store/schema.ts';

/** A running test gateway. */
export interface TestGateway {
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  /** `http://127.0.0.1:PORT/v1` */
  readonly baseURL: string;
  /** A valid API key (tenant "test"). */
  readonly key: string;
  readonly keyId: string;
  readonly gw: Gateway;
  readonly dir: string;
  /** The configuration file the gateway runs with (`<dir>/sovra.yaml`; `gw.reload()` re-reads it). */
  readonly configPath: string;
  /** The `database` configuration section the gateway runs with (for CLI runs against the same store). */
  readonly database: { url: string; schema?: string };
  /** Every log line so far, raw JSON text. */
  logs(): string[];
  /** All request records (flushes the recorder first), oldest first. */
  records(): Promise<RequestsTable[]>;
  /** The record of one request id, waiting up to 2 s for it to be written. */
  record(id: string): Promise<RequestsTable>;
  close(): Promise<void>;
}

/** Options of {@link startGateway}. */
export interface StartOptions {
  /** Configuration object (YAML shape); server/database sections are filled in. */
  config: Record<string, unknown>;
  /** Use PostgreSQL (needs SOVRA_TEST_POSTGRES_URL); default SQLite. */
  postgres?: boolean;
  env?: NodeJS.ProcessEnv;
  logLevel?: 'info' | 'debug' | 'trace';
  /** Called with the gateway's folder before it starts (e.g. to write a model file there). */
  beforeStart?: (dir: string) => void;
}

/** Start a gateway for a test. */
export async function startGateway(opts: StartOptions): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'sovra-test-'));
  const lines: string[] = [];
  let partial = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      partial += chunk.toString('utf8');
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        lines.push(partial.slice(0, i));
        partial = partial.slice(i + 1);
      }
      cb();
    },
  });
  const pgUrl = process.env['SOVRA_TEST_POSTGRES_URL'];
  const schema = opts.postgres && pgUrl ? `t_${randomBytes(6).toString('hex')}` : undefined;
  const database: { url: string; schema?: string } = schema && pgUrl ? { url: pgUrl, schema } : { url: `sqlite:${join(dir, 'sovra.db')}` };
  const cfgObj = {
    ...opts.config,
    server: { host: '127.0.0.1', port: 0, ...((opts.config['server'] as object) ?? {}) },
    database,
    logging: { level: opts.logLevel ?? 'info' },
  };
  const yamlText = stringify(cfgObj);
  const configPath = join(dir, 'sovra.yaml');
  writeFileSync(configPath, yamlText);
  const config = parseConfig(yamlText, 'test-config', {});
  opts.beforeStart?.(dir);
  const logger = createLogger(config.logging.level, sink);
  const gw = await createGateway({ config, configDir: dir, logger, env: opts.env ?? process.env, configPath });
  const origin = await gw.start();
  const k = await createKey(gw.store(), { tenant: 'test', name: 'test-key' });
  await gw.backendsSettled();

  const records = async () => {
    await gw.flush();
    const rows = await listRequests(gw.store(), { limit: 100_000 });
    return rows.sort((a, b) => a.ts - b.ts);
  };
  return {
    origin,
    baseURL: `${origin}/v1`,
    key: k.key,
    keyId: k.id,
    gw,
    dir,
    configPath,
    database,
    logs: () => lines.slice(),
    records,
    async record(id: string) {
      const until = Date.now() + 2000;
      for (;;) {
        const r = (await records()).find((x) => x.id === id);
        if (r) return r;
        if (Date.now() > until) throw new Error(`no request record for ${id}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    },
    async close() {
      await gw.close();
      if (schema && pgUrl) {
        const pg = await import('pg');
        const c = new pg.default.Client({ connectionString: pgUrl });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A config with one openai-compatible backend `mock` (at `url`) and alias `test-model` → `mock-llm`. */
export function mockConfig(url: string, backend: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    backends: [
      {
        id: 'mock',
        provider: 'openai-compatible',
        base_url: url,
        api_key_env: 'MOCK_UPSTREAM_KEY',
        jurisdiction: 'MY',
        ...backend,
      },
    ],
    models: [{ name: 'test-model', backend: 'mock', upstream_model: 'mock-llm' }],
    ...extra,
  };
}

/** Environment giving the mock backend its credential (`Bearer up-cred-TEST-9999`). */
export const MOCK_ENV = { ...process.env, MOCK_UPSTREAM_KEY: 'up-cred-TEST-9999' };
