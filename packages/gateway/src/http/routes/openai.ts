/**
 * The OpenAI-compatible data-plane routes. Each route is a thin binding of a URL to an operation;
 * the work happens in the pipeline (src/pipeline/index.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Operation } from '../../providers/types.ts';
import type { GatewayError } from '../errors.ts';

/** What the routes need from the pipeline. */
export interface DataPlane {
  /** Run one data-plane request to its end (the handler hijacks the reply). */
  handle(op: Operation, req: FastifyRequest, reply: FastifyReply): Promise<void>;
  /** `GET /v1/models` and `GET /v1/models/:model`. */
  models(req: FastifyRequest, reply: FastifyReply): Promise<void>;
  /**
   * Called for requests rejected before a handler ran (body too large, …) so they are recorded;
   * resolves with what to send (the error, or a replacement such as 503 `audit_unavailable`) and
   * extra headers (the audit leaf hash).
   */
  onRejected?(req: FastifyRequest, err: GatewayError): Promise<{ error: GatewayError; headers: Record<string, string> }>;
  /** Runs on data-plane POSTs before the body is read (authentication). */
  preAuthenticate?(req: FastifyRequest): Promise<void>;
}

/** URL → operation. */
export const DATA_PLANE_ROUTES: ReadonlyArray<readonly [string, Operation]> = [
  ['/v1/chat/completions', 'chat.completions'],
  ['/v1/completions', 'completions'],
  ['/v1/embeddings', 'embeddings'],
  ['/v1/responses', 'responses'],
];

/** Register `/v1/*` routes on the server. */
export function registerOpenAiRoutes(app: FastifyInstance, dp: DataPlane): void {
  const onRequest = dp.preAuthenticate ? [(req: FastifyRequest) => dp.preAuthenticate!(req)] : [];
  for (const [url, op] of DATA_PLANE_ROUTES) {
    app.post(url, { onRequest }, (req, reply) => dp.handle(op, req, reply));
  }
  app.get('/v1/models', (req, reply) => dp.models(req, reply));
  app.get('/v1/models/*', (req, reply) => dp.models(req, reply));
}
