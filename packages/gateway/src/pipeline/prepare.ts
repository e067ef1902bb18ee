/**
 * Prepare stage: rewrite the client's body for the chosen backend. Fields Sovra owns and rewrites
 * (documented in the README):
 * - `model` → the route's upstream model;
 * - `max_tokens` / `max_completion_tokens` → per the backend's `token_field` rule (see config schema);
 * - `stream_options.include_usage` → set to true on streaming chat/completions when the backend
 *   supports it, so usage is always counted; the extra usage chunk is stripped again for clients that
 *   did not ask for it.
 * Every other field passes through unchanged.
 */
import { GatewayError } from '../http/errors.ts';
import type { RequestContext, Route } from './context.ts';
import type { ModelConfig } from '../config/schema.ts';

/**
 * Refuses a request that sends a field the model alias forbids (`forbid_params`).
 * @throws GatewayError 400 `forbidden_parameter` (param = the field)
 */
export function assertNotForbidden(model: Pick<ModelConfig, 'name' | 'forbid_params'>, body: Record<string, unknown>): void {
  for (const p of model.forbid_params) {
    if (body[p] !== undefined)
      throw new GatewayError(400, 'invalid_request_error', 'forbidden_parameter', `The parameter '${p}' is not allowed for model '${model.name}'.`, p);
  }
}

/**
 * Build the upstream body. Sets `ctx.stream` and `ctx.clientWantsUsage`.
 * @throws GatewayError 400 `forbidden_parameter` when the route forbids a field the client sent
 */
export function prepareUpstreamBody(ctx: RequestContext, body: Record<string, unknown>, route: Route): Record<string, unknown> {
  assertNotForbidden(route.model, body);
  const out: Record<string, unknown> = { ...body, model: route.upstreamModel };
  ctx.stream = body['stream'] === true;

  // Completion-length fields: the newer field wins.
  const mct = body['max_completion_tokens'];
  const mt = body['max_tokens'];
  const cap = mct ?? mt;
  switch (route.backendConfig.capabilities.token_field) {
    case 'passthrough':
      if (mct !== undefined && mct !== null && mt !== undefined) delete out['max_tokens'];
      break;
    case 'max_tokens':
      delete out['max_completion_tokens'];
      if (cap !== undefined && cap !== null) out['max_tokens'] = cap;
      break;
    case 'max_completion_tokens':
      delete out['max_tokens'];
      if (cap !== undefined && cap !== null) out['max_completion_tokens'] = cap;
      break;
  }

  const so = body['stream_options'] as Record<string, unknown> | null | undefined;
  ctx.clientWantsUsage = so?.['include_usage'] === true;
  if (
    ctx.stream &&
    (ctx.operation === 'chat.completions' || ctx.operation === 'completions') &&
    route.backendConfig.capabilities.stream_usage &&
    !ctx.clientWantsUsage
  ) {
    out['stream_options'] = { ...(so ?? {}), include_usage: true };
  }
  return out;
}
