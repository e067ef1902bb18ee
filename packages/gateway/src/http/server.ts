/**
 * HTTP wiring: one Fastify instance, the data-plane routes (`/v1/*`), health (`/healthz`,
 * `/readyz`), and OpenAI-shaped errors for everything that goes wrong before a handler runs
 * (bad JSON, body too large, unknown route).
 */
import { newRequestId } from './request-id.ts';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from '../telemetry/logger.ts';
import { GatewayError, errorJson } from './errors.ts';
import { registerOpenAiRoutes, type DataPlane } from './routes/openai.ts';
import { registerAuditRoutes, type AuditReadSource } from './routes/audit.ts';
import { registerAdminRoutes, type AdminApiDeps } from './routes/admin.ts';

/** Readiness as reported by `/readyz`. */
export interface Readiness {
  ready(): { ok: boolean; reasons: string[] };
}

/** Options for {@link buildServer}. */
export interface ServerOptions {
  logger: Logger;
  /** Largest accepted body, bytes. */
  bodyLimit: number;
  /** Longest time to receive a whole request (headers and body), ms; 0 = none. */
  requestTimeoutMs: number;
  dataPlane: DataPlane;
  readiness: Readiness;
  /** The transparency log's read API (`/audit/*`, no API key); omitted when the audit log is off. */
  audit?: AuditReadSource;
  /** The admin API (`/admin/v1/*`, admin keys); omitted = not served. */
  admin?: AdminApiDeps;
}

/** Build (not start) the HTTP server. */
export function buildServer(opts: ServerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'req_id' }),
    bodyLimit: opts.bodyLimit,
    genReqId: newRequestId,
    requestIdHeader: false,
    keepAliveTimeout: 72_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    requestTimeout: opts.requestTimeoutMs,
    // Malformed URLs and the like: OpenAI-shaped too.
    frameworkErrors: (err, _req, reply) => {
      const status = (err as { statusCode?: number }).statusCode ?? 400;
      const r = reply as unknown as { code(n: number): typeof r; header(k: string, v: string): typeof r; send(b: string): void };
      r.code(status)
        .header('content-type', 'application/json')
        .send(errorJson(status === 400 ? 'Malformed request URL.' : err.message, 'invalid_request_error', (err as { code?: string }).code ?? null));
    },
    // Errors Node's HTTP parser hits before Fastify sees a request (oversized headers, bad framing).
    clientErrorHandler: (err: Error & { code?: string }, socket) => {
      if (!socket.writable) return socket.destroy();
      const [status, text] =
        err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large']
          : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? [408, 'Request Timeout']
            : [400, 'Bad Request'];
      const body = errorJson(status === 431 ? 'The request headers are too large.' : status === 408 ? 'The request took too long to arrive.' : 'Malformed HTTP request.', 'invalid_request_error', status === 431 ? 'headers_too_large' : status === 408 ? 'request_timeout' : 'bad_request');
      socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    },
  });

  // Bodies are taken raw; the pipeline validates UTF-8 and JSON itself to answer in OpenAI's shape.
  const raw = (_req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: Buffer) => void) => done(null, body);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, raw);

  app.setErrorHandler(async (err: Error & { statusCode?: number; code?: string }, req, reply) => {
    let ge: GatewayError;
    if (err instanceof GatewayError) ge = err;
    else if (err.code === 'ECONNRESET' || req.raw.aborted || req.raw.socket?.destroyed) {
      // The client went away while sending its request: record it, answer no one.
      reply.hijack();
      await opts.dataPlane.onRejected?.(req, new GatewayError(499, 'invalid_request_error', 'client_disconnected', 'The client closed the connection.'));
      return;
    }
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413)
      ge = new GatewayError(413, 'invalid_request_error', 'request_too_large', `The request body is larger than the limit of ${opts.bodyLimit} bytes.`);
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)
      ge = new GatewayError(err.statusCode, 'invalid_request_error', err.code ?? null, err.message);
    else {
      req.log.error({ err }, 'unhandled error');
      ge = new GatewayError(500, 'api_error', 'internal_error', 'The gateway hit an internal error.');
    }
    // The record is committed before the error is sent (a 503 audit_unavailable replaces it if that fails).
    const out = (await opts.dataPlane.onRejected?.(req, ge)) ?? { error: ge, headers: {} };
    const e = out.error;
    return reply.code(e.status).headers({ ...e.headers, ...out.headers, 'content-type': 'application/json', 'x-request-id': String(req.id) }).send(e.body());
  });

  app.setNotFoundHandler((req, reply) => {
    void reply
      .code(404)
      .header('content-type', 'application/json')
      .send(errorJson(`Unknown request URL: ${req.method} ${req.url.split('?')[0]}.`, 'invalid_request_error', 'unknown_url'));
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = opts.readiness.ready();
    return reply.code(r.ok ? 200 : 503).send({ status: r.ok ? 'ready' : 'not_ready', reasons: r.reasons });
  });

  registerOpenAiRoutes(app, opts.dataPlane);
  if (opts.audit) registerAuditRoutes(app, opts.audit);
  if (opts.admin) registerAdminRoutes(app, opts.admin);
  return app;
}
