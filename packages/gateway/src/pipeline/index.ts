/**
 * The data-plane request pipeline, as a short list of stages:
 *
 *   authenticate → parse → route → prepare → forward → record
 *
 * Each stage may end the request with a GatewayError (sent in OpenAI's shape); whatever happens —
 * success, upstream failure, rejection or client disconnect — exactly one request record is written.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Operation } from '../providers/types.ts';
import type { RequestsTable } from '../store/schema.ts';
import type { Logger } from '../telemetry/logger.ts';
import { GatewayError } from '../http/errors.ts';
import { DATA_PLANE_ROUTES, type DataPlane } from '../http/routes/openai.ts';
import { authenticate, type Authenticator } from './authenticate.ts';
import { newContext, type Outcome, type Principal, type RequestContext } from './context.ts';
import { forward } from './forward.ts';
import { prepareUpstreamBody } from './prepare.ts';
import { estimateUsage, toRecord } from './record.ts';
import type { RouteTable } from './route.ts';
import { parseJsonBody, validateBody } from './validate.ts';

/** Where finished requests go (the request recorder; later also audit and usage settlement). */
export interface RecordSink {
  record(row: RequestsTable): void;
}

/** Dependencies of the pipeline. */
export interface PipelineDeps {
  auth: Authenticator;
  /** Current route table (swappable on reload). */
  routes: () => RouteTable;
  sink: RecordSink;
  logger: Logger;
  /** SSE heartbeat, ms (0 = off). */
  heartbeatMs: number;
  /** Upper bound for the `x-sovra-timeout-ms` header, ms. */
  maxRequestTimeoutMs: number;
  /** null when ready to serve, else the reason. */
  notReady: () => string | null;
}

const PRINCIPAL = Symbol('sovra.principal');
type AuthedRequest = FastifyRequest & { [PRINCIPAL]?: Principal };
const principalOf = (req: FastifyRequest): Principal | undefined => (req as AuthedRequest)[PRINCIPAL];

/** Header a client may send to shorten (never lengthen beyond the operator maximum) its deadline, ms. */
export const TIMEOUT_HEADER = 'x-sovra-timeout-ms';

/** The pipeline; implements the routes' {@link DataPlane}. */
export class Pipeline implements DataPlane {
  constructor(private readonly deps: PipelineDeps) {}

  async handle(op: Operation, req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const ctx = newContext(String(req.id), op);
    const res = reply.raw;
    reply.hijack();
    res.on('close', () => {
      if (!res.writableFinished) ctx.abort.abort();
    });
    if (res.destroyed || req.raw.socket?.destroyed) ctx.abort.abort(); // left before the handler ran
    try {
      const why = this.deps.notReady();
      if (why) throw new GatewayError(503, 'service_unavailable', 'not_ready', `Sovra is starting: ${why}.`, null, { 'retry-after': '2' });
      // 1. authenticate (normally done already by the onRequest hook, before the body was read)
      ctx.principal = principalOf(req) ?? (await authenticate(this.deps.auth, req.headers.authorization));
      // 2. parse
      const parsed = parseJsonBody(req.body as Buffer);
      const body = parsed.body;
      validateBody(op, body);
      ctx.body = body;
      ctx.modelName = body['model'] as string;
      ctx.stream = body['stream'] === true;
      // 3. route
      const route = this.deps.routes().resolve(ctx.modelName, op);
      ctx.route = route;
      // 4. prepare
      const upstreamBody = prepareUpstreamBody(ctx, body, route);
      const deadline = this.deadline(req);
      if (deadline > 0)
        ctx.route = { ...route, timeouts: ctx.stream ? { ...route.timeouts, streamTotalMs: deadline } : { ...route.timeouts, totalMs: deadline } };
      const fwd = forwardedHeaders(req, route.backendConfig);
      const upstreamText = parsed.serialize(upstreamBody);
      // 5. forward
      await forward(ctx, upstreamBody, upstreamText, res, { heartbeatMs: this.deps.heartbeatMs, ...(fwd ? { forwarded: fwd } : {}) });
    } catch (err) {
      const ge = err instanceof GatewayError ? err : internalError(this.deps.logger, ctx.id, err);
      ctx.status = ge.status;
      if (ctx.outcome === 'ok') ctx.outcome = outcomeOf(ge);
      ctx.errorCode ??= ge.code;
      if (ctx.abort.signal.aborted) {
        ctx.status = 499;
        ctx.outcome = 'client_disconnected';
      } else sendError(res, ge, ctx.id);
    } finally {
      // 6. record
      this.finish(ctx);
    }
  }

  async models(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const why = this.deps.notReady();
    if (why) throw new GatewayError(503, 'service_unavailable', 'not_ready', `Sovra is starting: ${why}.`, null, { 'retry-after': '2' });
    await authenticate(this.deps.auth, req.headers.authorization);
    const created = 1_700_000_000;
    const data = this.deps.routes().models().map((m) => ({ id: m.name, object: 'model', created, owned_by: 'sovra' }));
    const wanted = (req.params as Record<string, string>)['*']; // already URL-decoded by the router
    if (wanted !== undefined) {
      const one = data.find((d) => d.id === wanted);
      if (!one) throw new GatewayError(404, 'invalid_request_error', 'model_not_found', `The model '${wanted}' does not exist or you do not have access to it.`, 'model');
      return reply.send(one);
    }
    return reply.send({ object: 'list', data });
  }

  onRejected(req: FastifyRequest, err: GatewayError): void {
    const path = req.url.split('?')[0];
    const op = DATA_PLANE_ROUTES.find(([u]) => u === path)?.[1];
    if (!op) return;
    const ctx = newContext(String(req.id), op);
    const p = principalOf(req);
    if (p) ctx.principal = p;
    ctx.status = err.status;
    ctx.outcome = err.status === 499 ? 'client_disconnected' : 'rejected';
    ctx.errorCode = err.code;
    this.finish(ctx);
  }

  /**
   * onRequest hook for data-plane POSTs: check the key before the body is read, so that a client
   * without a valid key cannot make the gateway buffer (up to the body limit) on its behalf.
   * @throws GatewayError 401 (the response closes the connection)
   */
  async preAuthenticate(req: FastifyRequest): Promise<void> {
    if (this.deps.notReady()) return; // answered with 503 by the handler
    try {
      (req as AuthedRequest)[PRINCIPAL] = await authenticate(this.deps.auth, req.headers.authorization);
    } catch (err) {
      if (err instanceof GatewayError) throw new GatewayError(err.status, err.type, err.code, err.message, err.param, { ...err.headers, connection: 'close' });
      throw err;
    }
  }

  private deadline(req: FastifyRequest): number {
    const h = req.headers[TIMEOUT_HEADER];
    if (h === undefined) return 0;
    const text = Array.isArray(h) ? h[0]! : h;
    const v = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
    if (!Number.isInteger(v) || v <= 0)
      throw new GatewayError(400, 'invalid_request_error', 'invalid_header', `The ${TIMEOUT_HEADER} header must be a positive integer (milliseconds).`, TIMEOUT_HEADER);
    return Math.min(v, this.deps.maxRequestTimeoutMs);
  }

  private finish(ctx: RequestContext): void {
    estimateUsage(ctx);
    const row = toRecord(ctx);
    try {
      this.deps.sink.record(row);
    } catch (err) {
      this.deps.logger.error({ err, req_id: ctx.id }, 'request record failed');
    }
    this.deps.logger.info(
      {
        req_id: row.id,
        op: row.operation,
        tenant: ctx.principal?.tenant,
        key_id: row.key_id,
        model: row.model,
        backend: row.backend_id,
        stream: ctx.stream,
        status: row.status,
        outcome: row.outcome,
        error_code: row.error_code ?? undefined,
        latency_ms: row.latency_ms,
        ttfb_ms: row.ttfb_ms ?? undefined,
        prompt_tokens: row.prompt_tokens ?? undefined,
        completion_tokens: row.completion_tokens ?? undefined,
        usage_source: row.usage_source,
      },
      'request',
    );
  }
}

function outcomeOf(ge: GatewayError): Outcome {
  if (ge.status === 504) return 'upstream_timeout';
  if (ge.status === 502) return 'upstream_unavailable';
  if (ge.status >= 500) return 'gateway_error';
  return 'rejected';
}

function internalError(logger: Logger, id: string, err: unknown): GatewayError {
  logger.error({ err, req_id: id }, 'unhandled error in pipeline');
  return new GatewayError(500, 'api_error', 'internal_error', 'The gateway hit an internal error.');
}

/** Send an OpenAI-shaped error on a raw response, unless headers already went out. */
export function sendError(res: ServerResponse, ge: GatewayError, requestId: string): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded && !res.destroyed) res.end();
    return;
  }
  const body = ge.body();
  res.writeHead(ge.status, {
    ...ge.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
  });
  res.end(body);
}

function forwardedHeaders(req: FastifyRequest, b: { provider: string } & Partial<{ forward_headers: string[] }>): Record<string, string> | undefined {
  const names = b.forward_headers;
  if (!names || names.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = req.headers[n];
    if (typeof v === 'string') out[n] = v;
  }
  return out;
}
