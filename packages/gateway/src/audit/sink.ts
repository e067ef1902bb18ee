/**
 * The pipeline's {@link RecordSink} over the {@link Journal}: with the audit log on, each finished
 * request commits its row, its log entry (the canonical `request` record) and its commitment salt in
 * one group-committed transaction, and the commit resolves with the entry's base64 leaf hash; with the
 * audit log off only the row is written, in the background.
 */
import type { Logger } from '../telemetry/logger.ts';
import type { RecordSink } from '../pipeline/index.ts';
import type { Journal } from './journal.ts';

/**
 * @param journal the journal, or undefined while the store is not open (then nothing is recorded)
 * @param audited whether log entries are written
 */
export function createJournalSink(journal: () => Journal | undefined, audited: boolean, logger: Logger): RecordSink {
  return {
    audited,
    async commit(row, tenant, commitments, policy) {
      const j = journal();
      if (!j) return null;
      if (!audited || !commitments) {
        j.write({ request: row }).catch((err: unknown) => logger.error({ err, req_id: row.id }, 'writing the request record failed'));
        return null;
      }
      // The record itself is built (canonical JSON, leaf hash) by the committing thread.
      return j.write({ request: row, requestEntry: { tenant, commitments: commitments.digests(), ...(policy ? { policy } : {}) }, salt: { id: row.id, salt: commitments.salt } });
    },
  };
}
