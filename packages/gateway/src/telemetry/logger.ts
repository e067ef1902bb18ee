/**
 * Structured JSON logging (pino). Every line carries the request id (`req_id`) where there is one.
 * Secrets are never logged: request headers are not logged at all, and the `redact` list below
 * censors credential-bearing paths should one ever be passed in by mistake.
 */
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

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
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  const opts = {
    level,
    base: { service: 'sovra' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(opts, destination as unknown as DestinationStream) : pino(opts);
}
