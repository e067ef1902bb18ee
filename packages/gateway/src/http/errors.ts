/**
 * OpenAI-shaped errors: every error Sovra itself produces has the body
 * `{"error":{"message":string,"type":string,"param":string|null,"code":string|null}}`
 * (the shape of https://platform.openai.com/docs/guides/error-codes), so that clients handle
 * gateway and upstream errors the same way.
 */

/** The error object inside `{"error": …}`. */
export interface OpenAiErrorObject {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** An error that ends a request with a given HTTP status and OpenAI-shaped body. */
export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  /**
   * @param status HTTP status (400, 401, 404, 413, 451, 499, 502, 503, 504, …)
   * @param type OpenAI error type, e.g. "invalid_request_error"
   * @param code machine-readable code, e.g. "model_not_found"
   * @param message human-readable text; must never contain secrets or request content
   * @param param the offending request field, if any (e.g. "messages[0].role")
   * @param headers extra response headers (e.g. retry-after)
   */
  constructor(
    readonly status: number,
    readonly type: string,
    readonly code: string | null,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  /** The JSON body `{"error":{…}}` as a string. */
  body(): string {
    return errorJson(this.message, this.type, this.code, this.param);
  }
}

/** Serialise an OpenAI-shaped error body. */
export function errorJson(message: string, type: string, code: string | null, param: string | null = null): string {
  const error: OpenAiErrorObject = { message, type, param, code };
  return JSON.stringify({ error });
}

/** 400 for a malformed request body; `param` names the field. */
export function invalidRequest(message: string, param: string | null = null, code: string | null = null): GatewayError {
  return new GatewayError(400, 'invalid_request_error', code, message, param);
}
