/**
 * Load, create and validate the configuration file.
 *
 * - `SOVRA_CONFIG` names the file (default `./sovra.yaml`); when it does not exist it is created with
 *   commented defaults (`defaultConfigYaml`), serving the shipped model.
 * - Environment overrides: `SOVRA_HOST`, `SOVRA_PORT`, `SOVRA_DATABASE_URL`, `SOVRA_LOG_LEVEL`.
 * - Errors are {@link ConfigError}s whose message names the file, the path (e.g. `backends[0].base_url`)
 *   and the problem.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { ZodIssue } from 'zod';
import { configSchema, crossCheck, semanticCheck, type Config } from './schema.ts';
import { defaultConfigYaml } from './default-config.ts';

/** A configuration problem, with every issue listed as `path: message`. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly issues: string[],
  ) {
    super(`invalid configuration in ${file}:\n  - ${issues.join('\n  - ')}`);
  }
}

/** A loaded configuration. */
export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file. */
  path: string;
  /** Folder of the file: relative paths in the config resolve against it. */
  dir: string;
  /** True when this call created the file with defaults. */
  created: boolean;
}

/** Format a zod issue path as `backends[0].base_url`. */
export function formatPath(path: ReadonlyArray<string | number>): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${p}` : p;
  return s || '(root)';
}

function issueText(i: ZodIssue): string {
  if (i.code === 'unrecognized_keys') return `${formatPath(i.path)}: unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
  if (i.code === 'invalid_union_discriminator') return `${formatPath(i.path)}: must be one of ${i.options.map((o) => `"${String(o)}"`).join(', ')}`;
  return `${formatPath(i.path)}: ${i.message}`;
}

/**
 * Parse and validate YAML text.
 * @throws ConfigError on YAML syntax errors or schema violations
 */
export function parseConfig(text: string, file = '<config>', env: NodeJS.ProcessEnv = {}): Config {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) throw new ConfigError(file, doc.errors.map((e) => e.message.split('\n')[0]!));
  const raw = (doc.toJS() ?? {}) as Record<string, unknown>;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, ['(root): must be a mapping']);
  applyEnv(raw, env);
  const r = configSchema.safeParse(raw);
  const issues = r.success ? [] : r.error.issues.map(issueText);
  for (const x of crossCheck(raw)) issues.push(`${formatPath(x.path)}: ${x.message}`);
  if (issues.length > 0 || !r.success) throw new ConfigError(file, issues);
  const semantic = semanticCheck(r.data);
  if (semantic.length > 0) throw new ConfigError(file, semantic.map((x) => `${formatPath(x.path)}: ${x.message}`));
  return r.data;
}

function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  const section = (k: string) => {
    const v = raw[k];
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    const o: Record<string, unknown> = {};
    raw[k] = o;
    return o;
  };
  if (env['SOVRA_HOST']) section('server')['host'] = env['SOVRA_HOST'];
  if (env['SOVRA_PORT']) section('server')['port'] = Number(env['SOVRA_PORT']);
  if (env['SOVRA_DATABASE_URL']) section('database')['url'] = env['SOVRA_DATABASE_URL'];
  if (env['SOVRA_LOG_LEVEL']) section('logging')['level'] = env['SOVRA_LOG_LEVEL'];
}

/**
 * Load the configuration file, creating it with defaults if it does not exist.
 * @param file path (default: `SOVRA_CONFIG` or `./sovra.yaml`)
 * @throws ConfigError when the file is invalid
 */
export function loadConfig(file?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const path = resolve(file || env['SOVRA_CONFIG'] || 'sovra.yaml');
  let created = false;
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, defaultConfigYaml(dirname(path)), { flag: 'wx' });
    created = true;
  }
  const config = parseConfig(readFileSync(path, 'utf8'), path, env);
  return { config, path, dir: dirname(path), created };
}

/** A file path of the configuration (key files…): relative paths are taken from the configuration folder; absolute ones are kept. */
export function resolveConfigPath(path: string, configDir: string): string {
  return resolve(configDir, path);
}

/** Resolve `sqlite:./x.db` URLs against the configuration folder; other URLs are returned as is. */
export function resolveDatabaseUrl(url: string, configDir: string): string {
  const m = /^sqlite:(.*)$/.exec(url);
  if (!m || m[1] === ':memory:') return url;
  return `sqlite:${resolve(configDir, m[1]!)}`;
}
