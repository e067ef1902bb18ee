/**
 * The log's Ed25519 signing key (spec §8.2, §8.3): loaded from `SOVRA_AUDIT_SIGNING_KEY` or the key
 * file (Go `PRIVATE+KEY+<name>+<id>+<base64>` format), or created once (file mode 0600).
 * Key material never appears in messages or logs.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseSignerKey } from '@sovra/tlog';
import { generateLogKey } from '@sovra/tlog/node';

/** Environment variable that may hold the signer key string instead of the key file. */
export const SIGNING_KEY_ENV = 'SOVRA_AUDIT_SIGNING_KEY';

/** A loaded signer key: its name (must equal the log origin) and 32-byte seed. */
export interface LoadedSigningKey {
  name: string;
  seed: Uint8Array;
  /** Where it came from (for messages): `env`, or the key file path. */
  source: string;
  /** True when this call created the key file. */
  created: boolean;
}

/**
 * Reads the signer key from `env[SOVRA_AUDIT_SIGNING_KEY]`, else from `keyFile`.
 * @returns undefined when neither exists
 * @throws Error when the key is malformed (the message names the source, never the key)
 */
export function readSigningKey(keyFile: string, env: NodeJS.ProcessEnv): LoadedSigningKey | undefined {
  const fromEnv = env[SIGNING_KEY_ENV];
  const [text, source] = fromEnv ? [fromEnv.trim(), SIGNING_KEY_ENV] : existsSync(keyFile) ? [readFileSync(keyFile, 'utf8').trim(), keyFile] : [undefined, ''];
  if (text === undefined) return undefined;
  try {
    const k = parseSignerKey(text);
    return { name: k.name, seed: k.seed, source, created: false };
  } catch (err) {
    throw new Error(`audit signing key in ${source} is not a valid PRIVATE+KEY+… Ed25519 key: ${(err as Error).message}`);
  }
}

/**
 * Creates a new signer key named `name` in `keyFile` (parent folders created, mode 0600, never
 * overwriting an existing file).
 * @throws Error if the file exists or cannot be written
 */
export function createSigningKey(keyFile: string, name: string): LoadedSigningKey {
  const k = generateLogKey(name);
  mkdirSync(dirname(keyFile), { recursive: true });
  writeFileSync(keyFile, k.signerKey + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(keyFile, 0o600);
  return { name, seed: k.seed, source: keyFile, created: true };
}
