/**
 * Metering: rate limits (RPM/TPM per key and tenant), budgets in tokens or micro-USD with
 * reserve-then-settle, prices and request costs, usage rollups from the request records.
 *
 * Units everywhere: times in ms since the Unix epoch, token counts in tokens, money in integer
 * micro-USD (1 USD = 1,000,000).
 */
export * from './types.ts';
export * from './periods.ts';
export * from './prices.ts';
export * from './tokens.ts';
export * from './errors.ts';
export * from './storage.ts';
export * from './usage.ts';
export * from './metering.ts';
