/**
 * Privacy guard: detection and redaction of national and financial identifiers in prompts
 * (spec `pii-identifiers.md`). Public API: {@link detect} / {@link Detector}, the per-type
 * validators, and {@link applyRedaction}.
 */
export {
  detect,
  Detector,
  DEFAULT_MAX_CHARS,
  PiiInputTooLargeError,
  PiiTimeoutError,
  type DetectOptions,
  type DetectorConfig,
  type PiiSpan,
} from './detect.ts';
export { PII_TYPES, TYPE_INFO, type IdType, type PiiType, type Tier } from './types.ts';
export { normalise, normaliseDigits, type NormalisedText } from './normalise.ts';
export {
  compactFor,
  validateIdentifier,
  VALIDATORS,
  DEFAULT_CARD_RANGES,
  type CardRange,
  type InvalidReason,
  type ValidationResult,
} from './validators/index.ts';
export { DEFAULT_KEYWORDS, DEFAULT_NEGATIVE } from './context.ts';
export { applyRedaction, RedactionSession, RedactionVault, type RedactionAction, type RedactionResult, type RedactionSpan } from './redact.ts';
