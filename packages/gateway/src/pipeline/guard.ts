/**
 * Guard stage (after parse, before route): the privacy guard scans the request's free text for
 * personal identifiers and applies the caller's policy (src/privacy/guard.ts, docs/privacy.md).
 * What it found is counted per type and action for the audit entry (never the values); the body that
 * continues through the pipeline is the rewritten one, so routing, metering, the upstream and
 * every later stage only ever see placeholders.
 */
import type { PrivacyGuard } from '../privacy/guard.ts';
import { piiAuditLines } from '../privacy/guard.ts';
import type { RequestContext } from './context.ts';

/**
 * Runs the guard on `body` for the context's principal.
 * @returns the body to continue with (the same object when nothing changed)
 * @throws GatewayError 400 `pii_detected`, 413 `privacy_scan_too_large`, 503 `privacy_guard_unavailable`
 *   (the request is not forwarded; `ctx.pii` holds the counts when known)
 */
export function guard(ctx: RequestContext, body: Record<string, unknown>, g: PrivacyGuard): Record<string, unknown> {
  const policy = g.policyFor(ctx.principal?.tenant ?? null, ctx.principal?.keyId ?? null);
  if (policy.types.size === 0) return body;
  try {
    const out = g.inspect(ctx.operation, body, policy);
    ctx.pii = { lines: piiAuditLines(out.counts), restore: out.restore, raiseTo: out.allowed ? policy.allowClassification : null };
    return out.body;
  } catch (err) {
    const lines = (err as { pii?: string[] }).pii;
    if (lines) ctx.pii = { lines, restore: new Map(), raiseTo: null };
    throw err;
  }
}
