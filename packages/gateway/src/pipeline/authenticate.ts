/**
 * Authenticate stage: `Authorization: Bearer sk-sovra-…` → the key's principal.
 * The presented key is digested (SHA-256) and compared in constant time by the key store; it is
 * never logged, stored or echoed.
 */
import { GatewayError } from '../http/errors.ts';
import type { Principal } from './context.ts';

/** What the stage needs from the key store. */
export interface Authenticator {
  authenticate(presented: string): Promise<Principal | null>;
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/**
 * @param header the raw Authorization header value (or undefined)
 * @throws GatewayError 401 `missing_api_key` / `invalid_api_key`
 */
export async function authenticate(auth: Authenticator, header: string | string[] | undefined): Promise<Principal> {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value)
    throw new GatewayError(401, 'invalid_request_error', 'missing_api_key', "You didn't provide an API key. Send it as 'Authorization: Bearer sk-sovra-…'.");
  const m = BEARER.exec(value);
  if (!m)
    throw new GatewayError(401, 'invalid_request_error', 'invalid_api_key', "Malformed Authorization header; expected 'Bearer <key>'.");
  const p = await auth.authenticate(m[1]!);
  if (!p) throw new GatewayError(401, 'invalid_request_error', 'invalid_api_key', 'Incorrect API key provided.');
  return p;
}
