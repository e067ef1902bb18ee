/**
 * HTTP wiring: one Fastify instance, the data-plane routes (`/v1/*`), health (`/healthz`,
 * `/readyz`), and OpenAI-shaped errors for everything that goes wrong before a handler runs
 * (bad JSON, body too large, unknown route).
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from '../telemetry/logger.ts';
import { GatewayError, errorJson } from './errors.ts';
import { registerOpenAiRoutes, type DataPlane } from './routes/openai.ts';

/** Readiness as reported by `/readyz`. */
export interface Readiness {
  ready(): { ok: boolean; reasons: string[] };
}

/** Options for {@link buildServer}. */
export interface ServerOptions {
  logger: Logger;
  /** Largest accepted body, bytes. */
  bodyLimit: number;
  dataPlane: DataPlane;
  readiness: Readiness;
}

/** Build (not start) the HTTP server. */
export function buildServer(opts: ServerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'req_id' }),
    bodyLimit: opts.bodyLimit,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    keepAliveTimeout: 72_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });

  // Bodies are taken raw; the pipeline validates UTF-8 and JSON itself to answer in OpenAI's shape.
  const raw = (_req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: Buffer) => void) => done(null, body);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, raw);

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    let ge: GatewayError;
    if (err instanceof GatewayError) ge = err;
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413)
      ge = new GatewayError(413, 'invalid_request_error', 'request_too_large', `The request body is larger than the limit of ${opts.bodyLimit} bytes.`);
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)
      ge = new GatewayError(err.statusCode, 'invalid_request_error', err.code ?? null, err.message);
    else {
      req.log.error({ err }, 'unhandled error');
      ge = new GatewayError(500, 'api_error', 'internal_error', 'The gateway hit an internal error.');
    }
    opts.dataPlane.onRejected?.(req, ge);
    void reply.code(ge.status).headers({ ...ge.headers, 'content-type': 'application/json', 'x-request-id': String(req.id) }).send(ge.body());
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
  return app;
}
