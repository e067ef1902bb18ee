/**
 * Build one provider per configured backend. Adding an engine kind = one folder under providers/
 * plus one case here.
 */
import { resolve } from 'node:path';
import type { BackendConfig } from '../config/schema.ts';
import { UpstreamError, type Provider, type ProviderResult, type ProviderState } from './types.ts';
import { OpenAiCompatibleProvider } from './openai-compatible/provider.ts';

/** Logging hook for providers. */
export type ProviderLog = (level: 'info' | 'warn' | 'error', msg: string) => void;

/**
 * @param backends configured backends
 * @param configDir folder of the configuration file (relative model paths resolve against it)
 * @param env environment for `api_key_env` lookups
 * A backend whose `api_key_env` names an unset variable becomes an {@link UnavailableProvider}
 * (reported by /readyz and answered with 503 for its models) rather than stopping the gateway.
 */
export async function buildProviders(backends: BackendConfig[], configDir: string, env: NodeJS.ProcessEnv, log: ProviderLog): Promise<Map<string, Provider>> {
  const out = new Map<string, Provider>();
  for (const b of backends) {
    switch (b.provider) {
      case 'openai-compatible': {
        const apiKey = credential(b, env, log);
        if (apiKey instanceof UnavailableProvider) {
          out.set(b.id, apiKey);
          break;
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
      case 'anthropic': {
        const apiKey = credential(b, env, log);
        if (apiKey instanceof UnavailableProvider) {
          out.set(b.id, apiKey);
          break;
        }
        const { AnthropicProvider } = await import('./anthropic/provider.ts');
        out.set(
          b.id,
          new AnthropicProvider({
            id: b.id,
            baseUrl: b.base_url,
            apiKey,
            headers: b.headers,
            maxConnections: b.max_connections,
            connectTimeoutMs: b.timeouts.connect_ms,
            anthropicVersion: b.anthropic_version,
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

/**
 * The backend's credential from its `api_key_env` (undefined when it names none). An unset
 * variable is not fatal for the gateway: the backend becomes an {@link UnavailableProvider}
 * (reported not ready; the others serve), and the problem is logged without any value.
 */
function credential(b: { id: string; provider: string; api_key_env?: string | undefined }, env: NodeJS.ProcessEnv, log: ProviderLog): string | undefined | UnavailableProvider {
  if (!b.api_key_env) return undefined;
  const key = env[b.api_key_env];
  if (key) return key;
  const reason = `environment variable ${b.api_key_env} (api_key_env) is not set`;
  log('error', `backend ${b.id}: ${reason}; set it, or remove api_key_env if the engine needs no key`);
  return new UnavailableProvider(b.id, b.provider, reason);
}

/** A backend that cannot serve (misconfigured): never ready, with the reason. */
export class UnavailableProvider implements Provider {
  constructor(
    readonly id: string,
    readonly kind: string,
    private readonly reason: string,
  ) {}
  supports(): boolean {
    return true;
  }
  async start(): Promise<void> {
    throw new Error(`backend ${this.id}: ${this.reason}`);
  }
  state(): ProviderState {
    return { ready: false, reason: this.reason };
  }
  async call(): Promise<ProviderResult> {
    throw new UpstreamError('connect', `backend ${this.id} is not configured correctly`);
  }
  async close(): Promise<void> {}
}
