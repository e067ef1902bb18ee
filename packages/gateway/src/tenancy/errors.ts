/**
 * Errors of the tenancy services and the admin API. Every one is a {@link GatewayError}, so it has a
 * status and serialises to OpenAI's shape `{"error":{"message","type","param","code"}}`. Messages
 * never contain keys, digests or credentials.
 */
import { GatewayError } from '../http/errors.ts';

/** 400 `invalid_parameter` (or `code`): a field is missing, malformed or out of range; `param` names it. */
export function invalidParam(param: string, message: string, code = 'invalid_parameter'): GatewayError {
  return new GatewayError(400, 'invalid_request_error', code, message, param);
}

/**
 * 404 `<what>_not_found`. Also what a tenant-scoped principal gets for objects of other tenants, so
 * that their existence does not leak.
 * @param what `tenant` | `api_key` | `admin` | `budget` | …
 */
export function notFound(what: string, id: string): GatewayError {
  return new GatewayError(404, 'invalid_request_error', `${what}_not_found`, `No ${what.replace('_', ' ')} with id '${id.slice(0, 80)}'.`);
}

/** 409 with `code` (e.g. `tenant_exists`, `key_revoked`): the request conflicts with the object's current state. */
export function conflict(code: string, message: string): GatewayError {
  return new GatewayError(409, 'invalid_request_error', code, message);
}

/** 403 `insufficient_role`: the admin's role does not allow this action. */
export function insufficientRole(message = 'Your admin role does not allow this action.'): GatewayError {
  return new GatewayError(403, 'permission_error', 'insufficient_role', message);
}

/** 401 `missing_admin_key` / `invalid_admin_key`. Data-plane keys are never admin keys. */
export function unauthorizedAdmin(code: 'missing_admin_key' | 'invalid_admin_key', message: string): GatewayError {
  return new GatewayError(401, 'invalid_request_error', code, message);
}
