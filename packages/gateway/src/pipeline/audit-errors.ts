import { GatewayError } from '../http/errors.ts';

/** Messages shared by the pipeline stages for audit failures. */

/** Text of the `audit_unavailable` error (503 / stream error event): the answer is withheld because its log entry could not be committed. */
export const auditUnavailableMessage = 'The request could not be recorded in the audit log, so its answer is withheld. Retry later.';

/** The 503 sent instead of an answer whose log entry could not be committed. */
export function auditUnavailable(): GatewayError {
  return new GatewayError(503, 'api_error', 'audit_unavailable', auditUnavailableMessage, null, { 'retry-after': '1' });
}
