/** Messages shared by the pipeline stages for audit failures. */

/** Text of the `audit_unavailable` error (503 / stream error event): the answer is withheld because its log entry could not be committed. */
export const auditUnavailableMessage = 'The request could not be recorded in the audit log, so its answer is withheld. Retry later.';
