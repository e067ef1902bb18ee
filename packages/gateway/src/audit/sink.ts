/**
 * The pipeline's {@link RecordSink} over the {@link Journal}: with the audit log on, each finished
 * request commits its row, its log entry (the canonical `request` record) and its commitment salt in
 * one group-committed transaction — with content retention on, also its sealed request and response
 * bytes (`./content.ts`) — and the commit resolves with the entry's base64 leaf hash; with the audit
 * log off only the row is written, in the background.
 */
import type { Logger } from '../telemetry/logger.ts';
import type { RecordSink } from '../pipeline/index.ts';
import type { Journal } from './journal.ts';
import { sealContent, type ContentKeyring } from './content.ts';

/** Content retention as the sink applies it (`audit.content_retention`). */
export interface SinkRetention {
  /** Seals with `keyring.current`. */
  keyring: ContentKeyring;
  /** Most bytes kept per body (a larger body is not retained). */
  maxBodyBytes: number;
  /** Tenant names whose requests are retained; null = every request. */
  tenants: ReadonlySet<string> | null;
}

/**
 * @param journal the journal, or undefined while the store is not open (then nothing is recorded)
 * @param audited whether log entries are written
 * @param retention content retention (only with `audited`); absent = no content is kept
 */
export function createJournalSink(journal: () => Journal | undefined, audited: boolean, logger: Logger, retention?: SinkRetention): RecordSink {
  const keep = audited && retention ? retention : undefined;
  const retains = (tenant: string | null): boolean => keep !== undefined && (keep.tenants === null || (tenant !== null && keep.tenants.has(tenant)));
  return {
    audited,
    retainBytes: keep ? keep.maxBodyBytes : 0,
    // Only with retention on: the pipeline then asks once per request, after authentication.
    ...(keep ? { retains } : {}),
    async commit(row, tenant, commitments, policy) {
      const j = journal();
      if (!j) return null;
      if (!audited || !commitments) {
        j.write({ request: row }).catch((err: unknown) => logger.error({ err, req_id: row.id }, 'writing the request record failed'));
        return null;
      }
      // The record itself is built (canonical JSON, leaf hash) by the committing thread.
      const digests = commitments.digests();
      let content;
      if (keep && retains(tenant)) {
        const bodies = commitments.retained();
        if (bodies.request || bodies.response) content = sealContent(keep.keyring.current, row.id, bodies);
      }
      return j.write({
        request: row,
        requestEntry: { tenant, commitments: digests, ...(policy ? { policy } : {}) },
        salt: { id: row.id, salt: commitments.salt },
        ...(content ? { content } : {}),
      });
    },
  };
}
