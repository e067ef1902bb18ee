/**
 * Structured JSON logging (pino). Every line carries the request id (`req_id`) where there is one.
 * Secrets are never logged: request headers are not logged at all, and the `redact` list below
 * censors credential-bearing paths should one ever be passed in by mistake. Personal identifiers
 * are never logged either: every field, message and error passes the privacy scrubber
 * (src/privacy/scrub.ts) unless `scrub: false`.
 */
import { pino, stdSerializers, type DestinationStream, type Logger, type LevelWithSilent, type LoggerOptions } from 'pino';
import { scrubDeep, scrubText } from '../privacy/scrub.ts';

export type { Logger };

/** Paths censored in every log line. */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'headers["x-api-key"]',
  'headers["api-key"]',
  'headers.cookie',
  'key',
  'api_key',
  'apiKey',
];

/**
 * Create the process logger.
 * @param level pino level name; "silent" disables output
 * @param destination optional stream (tests capture logs through it); default stdout
 * @param options.scrub pass every line through the identifier scrubber (default true; config `privacy.scrub_logs`)
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream, options: { scrub?: boolean } = {}): Logger {
  const scrub = options.scrub !== false;
  const opts: LoggerOptions = {
    level,
    base: { service: 'sovra' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...(scrub
      ? {
          // The privacy choke point (src/privacy/scrub.ts): identifiers in any field or message → [TYPE].
          formatters: {
            log: (obj: Record<string, unknown>) => scrubDeep(obj) as Record<string, unknown>,
            bindings: (b: Record<string, unknown>) => scrubDeep(b) as Record<string, unknown>,
          },
          serializers: { err: (e: unknown) => scrubDeep(stdSerializers.err(e as Error)) },
          hooks: {
            logMethod(this: Logger, args: unknown[], method: (...a: unknown[]) => void) {
              for (let i = 0; i < args.length; i++) if (typeof args[i] === 'string') args[i] = scrubText(args[i] as string);
              // No message given: pino would copy the error's message into `msg` unscrubbed.
              if (args.length === 1 && args[0] !== null && typeof args[0] === 'object') {
                const o = args[0] as { message?: unknown; err?: { message?: unknown } };
                const m = o instanceof Error ? o.message : o.err instanceof Error ? o.err.message : undefined;
                if (typeof m === 'string') args.push(scrubText(m));
              }
              method.apply(this, args);
            },
          },
        }
      : {}),
  };
  const logger = destination ? pino(opts, destination as unknown as DestinationStream) : pino(opts);
  if (scrub) {
    // Child bindings are serialised once, at creation: scrub them there (children inherit this).
    const orig = logger.child as unknown as (this: Logger, b: Record<string, unknown>, o?: object) => Logger;
    (logger as { child: unknown }).child = function (this: Logger, bindings: Record<string, unknown>, o?: object) {
      return orig.call(this, scrubDeep(bindings) as Record<string, unknown>, o);
    };
  }
  return logger;
}
