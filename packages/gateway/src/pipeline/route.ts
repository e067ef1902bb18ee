/**
 * Route stage: resolve the requested model alias to a backend.
 * (Residency policy, pools and balancing come with sovereign routing; this stage is where they plug in.)
 */
import type { Operation, Provider, Timeouts } from '../providers/types.ts';
import type { BackendConfig, Config, ModelConfig } from '../config/schema.ts';
import { GatewayError } from '../http/errors.ts';
import type { Principal, Route } from './context.ts';

/**
 * Enforces a key's model allowlist.
 * @param principal the authenticated key (`modelAllowlist` null = every model)
 * @param alias the configured model alias the request resolved to
 * @throws GatewayError 403 `model_not_allowed` (param `model`) when the alias is not on the allowlist
 */
export function assertModelAllowed(principal: Pick<Principal, 'modelAllowlist'> | undefined, alias: string): void {
  const list = principal?.modelAllowlist;
  if (list === null || list === undefined) return;
  if (!list.includes(alias))
    throw new GatewayError(403, 'invalid_request_error', 'model_not_allowed', `This API key is not allowed to use the model '${alias}'.`, 'model');
}

/** Model alias → route table, built once per configuration. */
export class RouteTable {
  private readonly routes = new Map<string, Route>();

  /**
   * @param config validated configuration
   * @param providers backend id → provider instance
   */
  constructor(config: Config, providers: Map<string, Provider>) {
    const backends = new Map<string, BackendConfig>(config.backends.map((b) => [b.id, b]));
    for (const m of config.models) {
      const backendConfig = backends.get(m.backend)!;
      const provider = providers.get(m.backend)!;
      this.routes.set(m.name, {
        model: m,
        backendConfig,
        provider,
        upstreamModel: m.upstream_model ?? m.name,
        timeouts: timeoutsOf(backendConfig),
      });
    }
  }

  /** All model aliases, in configuration order. */
  models(): ModelConfig[] {
    return [...this.routes.values()].map((r) => r.model);
  }

  /**
   * Resolve an alias for an operation.
   * @param principal the caller; when given, its model allowlist is enforced (see {@link assertModelAllowed})
   * @throws GatewayError 404 `model_not_found`; 403 `model_not_allowed`; 400 `unsupported_operation`; 503 `backend_not_ready`
   */
  resolve(name: string, op: Operation, principal?: Pick<Principal, 'modelAllowlist'>): Route {
    const r = this.routes.get(name);
    if (!r) throw new GatewayError(404, 'invalid_request_error', 'model_not_found', `The model '${name}' does not exist or you do not have access to it.`, 'model');
    assertModelAllowed(principal, r.model.name);
    if (!r.provider.supports(op))
      throw new GatewayError(400, 'invalid_request_error', 'unsupported_operation', `The model '${name}' does not support ${op}.`, 'model');
    const st = r.provider.state();
    if (!st.ready)
      // The reason (which may name server paths) is for operators: /readyz and the log carry it.
      throw new GatewayError(503, 'service_unavailable', 'backend_not_ready', `The backend for model '${name}' is not ready; try again later (operators: see /readyz).`, null, { 'retry-after': '5' });
    return r;
  }
}

/** Convert configured timeouts (snake_case ms) to the provider's shape. */
export function timeoutsOf(b: BackendConfig): Timeouts {
  const t = b.timeouts;
  return { connectMs: t.connect_ms, firstByteMs: t.first_byte_ms, idleMs: t.idle_ms, totalMs: t.total_ms, streamTotalMs: t.stream_total_ms };
}
