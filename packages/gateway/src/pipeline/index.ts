/**
 * The data-plane request pipeline, as a short list of stages:
 *
 *   authenticate → parse → route → meter → prepare → forward → record
 *
 * Each stage may end the request with a GatewayError (sent in OpenAI's shape); whatever happens —
 * success, upstream failure, rejection or client disconnect — exactly one request record is written.
 *
 * With the audit log on, the record (request row + transparency-log entry + commitment salt) is
 * committed durably BEFORE the last byte of the response leaves: the answer (or error) is held until
 * the journal confirms. The client learns the entry's leaf hash from `x-sovra-audit-leaf-hash` (and
 * the spec's `x-audit-leaf-hash`, §10.4), or for streams from a final `: sovra-audit leaf_hash=…`
 * comment. If the journal cannot commit, the client gets a 503 `audit_unavailable` instead of the
 * answer (streams: an error event and no `[DONE]`). A client that disconnected is committed anyway.
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
import { admit, priceOnly, settle, type MeterDeps } from './meter.ts';
import { assertNotForbidden } from './prepare.ts';
import { dispatch } from './dispatch.ts';
import { guard } from './guard.ts';
import type { PrivacyGuard } from '../privacy/guard.ts';
import { requestNeeds, type RoutingError, type RoutingTable } from '../routing/router.ts';
import { DATA_CLASS_HEADER } from '../routing/policy.ts';
import { estimateUsage, toRecord } from './record.ts';
import { Commitments, type RecordPolicy } from '../audit/record.ts';
import { auditUnavailable } from './audit-errors.ts';
import { parseJsonBody, validateBody } from './validate.ts';

/** Where finished requests go: the journal (request row, and with the audit log on, the log entry). */
export interface RecordSink {
  /** True when log entries are written; then every commit is awaited before the response ends. */
  readonly audited: boolean;
  /**
   * Content retention (`audit.content_retention`): the most bytes of each body kept for sealing;
   * 0 or absent = the bodies are not kept.
   */
  readonly retainBytes?: number;
  /** With `retainBytes`: whether the requests of `tenant` (name; null = unauthenticated) are retained. */
  retains?(tenant: string | null): boolean;
  /**
   * Commits one finished request.
   * @param row the request row
   * @param tenant the tenant name (for the log entry), if authenticated
   * @param commitments the request/response HMACs (audit on), else null
   * @param policy the policy decisions taken (routing / residency, PII), for the log entry
   * @returns the entry's base64 leaf hash once durably committed (audit on), or null (audit off:
   *   the row is written in the background; or the store is not open yet)
   * @throws AuditUnavailableError when the journal could not commit the entry
   */
  commit(row: RequestsTable, tenant: string | null, commitments: Commitments | null, policy?: RecordPolicy): Promise<string | null>;
}

/** Thrown by {@link RecordSink.commit} when the journal failed: the request must not be answered as if recorded. */
export class AuditUnavailableError extends Error {
  override readonly name = 'AuditUnavailableError';
}


/** Response headers that tell the client its entry's leaf hash (spec §10.4). */
export function leafHashHeaders(leaf: string | null): Record<string, string> {
  return leaf ? { 'x-sovra-audit-leaf-hash': leaf, 'x-audit-leaf-hash': leaf } : {};
}

/** What the server sends for a request rejected before the pipeline ran (see {@link Pipeline.onRejected}). */
export interface RejectionReply {
  error: GatewayError;
  headers: Record<string, string>;
}

/** Dependencies of the pipeline. */
export interface PipelineDeps {
  auth: Authenticator;
  /** Current route table (swappable on reload). */
  routes: () => RoutingTable;
  sink: RecordSink;
  logger: Logger;
  /** SSE heartbeat, ms (0 = off). */
  heartbeatMs: number;
  /** Upper bound for the `x-sovra-timeout-ms` header, ms. */
  maxRequestTimeoutMs: number;
  /** null when ready to serve, else the reason. */
  notReady: () => string | null;
  /** The privacy guard (undefined when `privacy.enabled` is false). */
  privacy?: () => PrivacyGuard | undefined;
  /** Rate limits, budgets and prices (undefined until the store is open, or without metering). */
  meter?: () => MeterDeps | undefined;
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
    if (this.deps.sink.audited) {
      ctx.commitments = new Commitments(undefined, this.deps.sink.retainBytes ?? 0);
      ctx.commitments.request(Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
    }
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
      // A tenant whose requests are not retained: stop keeping its bodies now.
      if (ctx.commitments && this.deps.sink.retains && !this.deps.sink.retains(ctx.principal.tenant ?? null)) ctx.commitments.stopRetaining();
      // 2. parse
      const parsed = parseJsonBody(req.body as Buffer);
      let body = parsed.body;
      validateBody(op, body);
      ctx.stream = body['stream'] === true;
      // 2b. guard: personal identifiers handled before anything else sees the text
      const g = this.deps.privacy?.();
      if (g) body = guard(ctx, body, g);
      ctx.body = body;
      // 3. route: alias → pool, filtered by residency policy and capabilities (451 when nothing is allowed)
      const table = this.deps.routes();
      const plan = table.plan(body['model'] as string, requestNeeds(op, body), ctx.principal, req.headers[DATA_CLASS_HEADER], Date.now(), ctx.pii?.raiseTo ?? undefined);
      ctx.plan = plan;
      // Only a configured alias is recorded: a client-chosen string never reaches records or the log.
      ctx.modelName = plan.primary.model.name;
      assertNotForbidden(plan.primary.model, body);
      // 4. meter: rate limits, budget reservation for the worst case (settled in `commit`)
      const meter = this.deps.meter?.();
      if (meter) await admit(ctx, body, meter);
      const deadlineMs = this.deadline(req);
      // 5-6. dispatch: per attempt, pick a backend (live health), prepare the body, forward
      //      (forward calls `finalize` — the record — before the last byte)
      await dispatch(ctx, plan, body, res, {
        heartbeatMs: this.deps.heartbeatMs,
        finalize: () => this.commit(ctx),
        serialize: (b) => parsed.serialize(b),
        deadlineMs,
        table: () => this.deps.routes(),
        ...(ctx.pii && ctx.pii.restore.size > 0 ? { restore: ctx.pii.restore } : {}),
        forwardedFor: (b) => forwardedHeaders(req, b),
      });
    } catch (err) {
      const ge = err instanceof GatewayError ? err : internalError(this.deps.logger, ctx.id, err);
      const decisions = (err as RoutingError).decisions;
      if (decisions && !ctx.plan) ctx.decisions = decisions;
      ctx.status = ge.status;
      if (ctx.outcome === 'ok') ctx.outcome = outcomeOf(ge);
      ctx.errorCode ??= ge.code;
      if (ctx.abort.signal.aborted) {
        ctx.status = 499;
        ctx.outcome = 'client_disconnected';
      } else await this.replyError(ctx, res, ge);
    } finally {
      // 7. record (if not done yet: client disconnects, errors after the headers) and log
      await this.finish(ctx);
    }
  }

  /** Sends a gateway-made error after committing its record (a 503 `audit_unavailable` if that fails). */
  private async replyError(ctx: RequestContext, res: ServerResponse, ge: GatewayError): Promise<void> {
    if (res.headersSent || res.destroyed) {
      await this.commit(ctx).catch(() => null);
      if (!res.writableEnded && !res.destroyed) res.end();
      return;
    }
    const body = ge.body();
    if (!ctx.committed) ctx.commitments?.response(body);
    let leaf: string | null;
    try {
      leaf = await this.commit(ctx);
    } catch {
      sendError(res, auditUnavailable(), ctx.id);
      return;
    }
    sendError(res, ge, ctx.id, { ...ctx.responseHeaders, ...leafHashHeaders(leaf) });
  }

  /**
   * Commits the request's record once (memoised: every later call returns the same promise).
   * @returns the base64 leaf hash, or null when not audited
   * @throws AuditUnavailableError when the journal failed
   */
  private commit(ctx: RequestContext): Promise<string | null> {
    ctx.committed ??= (async () => {
      estimateUsage(ctx);
      const meter = this.deps.meter?.();
      if (meter && ctx.admission) {
        const err = await settle(ctx, meter);
        if (err) this.deps.logger.error({ err, req_id: ctx.id }, 'settling the request against its budgets failed; its reservation stays held');
      } else if (meter) priceOnly(ctx, meter); // no await: nothing to settle, the record goes out at once
      const row = toRecord(ctx);
      ctx.row = row;
      try {
        const residency = ctx.plan?.decisions ?? ctx.decisions;
        const pii = ctx.pii?.lines;
        const policy = residency || pii ? { residency: residency ?? [], pii: pii ?? [] } : undefined;
        return await this.deps.sink.commit(row, ctx.principal?.tenant ?? null, ctx.commitments ?? null, policy);
      } catch (err) {
        this.deps.logger.error({ err, req_id: ctx.id }, 'audit journal write failed; the answer is withheld');
        throw err instanceof AuditUnavailableError ? err : new AuditUnavailableError((err as Error)?.message ?? String(err), { cause: err });
      }
    })();
    return ctx.committed;
  }

  async models(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const why = this.deps.notReady();
    if (why) throw new GatewayError(503, 'service_unavailable', 'not_ready', `Sovra is starting: ${why}.`, null, { 'retry-after': '2' });
    const principal = await authenticate(this.deps.auth, req.headers.authorization);
    const created = 1_700_000_000;
    // A key sees the models it may use (its allowlist), like OpenAI's per-project model access.
    const allow = principal.modelAllowlist;
    const data = this.deps
      .routes()
      .models()
      .filter((m) => allow === null || allow.includes(m.name))
      .map((m) => ({ id: m.name, object: 'model', created, owned_by: 'sovra' }));
    const wanted = (req.params as Record<string, string>)['*']; // already URL-decoded by the router
    if (wanted !== undefined) {
      const one = data.find((d) => d.id === wanted);
      if (!one) throw new GatewayError(404, 'invalid_request_error', 'model_not_found', `The model '${wanted}' does not exist or you do not have access to it.`, 'model');
      return reply.send(one);
    }
    return reply.send({ object: 'list', data });
  }

  /**
   * Records a data-plane request rejected before its handler ran (401 before the upload, 413, a
   * client gone during the upload, …) and says what to send: the error with the leaf-hash headers, or
   * a 503 `audit_unavailable` when the record could not be committed. The request body was not (fully)
   * read, so its commitment is null. Other paths are not recorded.
   */
  async onRejected(req: FastifyRequest, err: GatewayError): Promise<RejectionReply> {
    const path = req.url.split('?')[0];
    const op = DATA_PLANE_ROUTES.find(([u]) => u === path)?.[1];
    if (!op) return { error: err, headers: {} };
    const ctx = newContext(String(req.id), op);
    if (this.deps.sink.audited) ctx.commitments = new Commitments();
    const p = principalOf(req);
    if (p) ctx.principal = p;
    ctx.status = err.status;
    ctx.outcome = err.status === 499 ? 'client_disconnected' : 'rejected';
    ctx.errorCode = err.code;
    if (err.status !== 499) ctx.commitments?.response(err.body());
    let reply: RejectionReply;
    try {
      reply = { error: err, headers: leafHashHeaders(await this.commit(ctx)) };
    } catch {
      reply = { error: auditUnavailable(), headers: {} };
    }
    await this.finish(ctx);
    return reply;
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

  /** Commits the record if nothing did yet (never throws), then writes the request's log line. */
  private async finish(ctx: RequestContext): Promise<void> {
    await this.commit(ctx).catch(() => null);
    const row = ctx.row ?? toRecord(ctx);
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
        ...(ctx.pii && ctx.pii.lines.length > 0 ? { pii: ctx.pii.lines } : {}),
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
export function sendError(res: ServerResponse, ge: GatewayError, requestId: string, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded && !res.destroyed) res.end();
    return;
  }
  const body = ge.body();
  res.writeHead(ge.status, {
    ...ge.headers,
    ...extraHeaders,
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
