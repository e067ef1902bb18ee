/**
 * Build one provider per configured backend. Adding an engine kind = one folder under providers/
 * plus one case here.
 */
import { resolve } from 'node:path';
import type { BackendConfig } from '../config/schema.ts';
import type { Provider } from './types.ts';
import { OpenAiCompatibleProvider } from './openai-compatible/provider.ts';

/** Logging hook for providers. */
export type ProviderLog = (level: 'info' | 'warn' | 'error', msg: string) => void;

/**
 * @param backends configured backends
 * @param configDir folder of the configuration file (relative model paths resolve against it)
 * @param env environment for `api_key_env` lookups
 * @throws Error when a backend names an api_key_env that is not set
 */
export async function buildProviders(backends: BackendConfig[], configDir: string, env: NodeJS.ProcessEnv, log: ProviderLog): Promise<Map<string, Provider>> {
  const out = new Map<string, Provider>();
  for (const b of backends) {
    switch (b.provider) {
      case 'openai-compatible': {
        let apiKey: string | undefined;
        if (b.api_key_env) {
          apiKey = env[b.api_key_env];
          if (!apiKey) throw new Error(`backends[${b.id}].api_key_env: environment variable ${b.api_key_env} is not set`);
        }
        out.set(
          b.id,
          new OpenAiCompatibleProvider({
            id: b.id,
            baseUrl: b.base_url,
            apiKey,
            headers: b.headers,
            maxConnections: b.max_connections,
            connectTimeoutMs: b.timeouts.connect_ms,
          }),
        );
        break;
      }
      case 'embedded': {
        const { EmbeddedProvider } = await import('./embedded/provider.ts');
        out.set(
          b.id,
          new EmbeddedProvider({
            id: b.id,
            modelPath: resolve(configDir, b.model_path),
            threads: b.threads,
            contextSize: b.context_size,
            contexts: b.contexts,
            maxQueue: b.max_queue,
            log,
          }),
        );
        break;
      }
    }
  }
  return out;
}
