/**
 * Errors thrown by the SDK. Every failure is an `AgentboxApiError` carrying a
 * code from the protocol's registry, or `CONNECTION_FAILED` when the server
 * could not be reached at all (that code never comes from a server).
 */
import { isErrorCode, type ErrorCode } from "@agentbox/protocol";

/** The request never got an HTTP response: refused, reset, DNS failure, TLS failure… */
export const CONNECTION_FAILED = "CONNECTION_FAILED";

export type SdkErrorCode = ErrorCode | typeof CONNECTION_FAILED;

export interface AgentboxApiErrorOptions {
  /** HTTP status of the response; 0 when no response was received (client-side error). */
  status?: number;
  details?: Record<string, unknown> | undefined;
  /** The code the server sent when it is not one this SDK knows (a newer server). */
  serverCode?: string | undefined;
  cause?: unknown;
}

export class AgentboxApiError extends Error {
  readonly code: SdkErrorCode;
  /** HTTP status; 0 when the error happened before any response (e.g. CONNECTION_FAILED). */
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;
  /** Set only when the server sent a code outside the registry; `code` is then derived from the status. */
  readonly serverCode: string | undefined;

  constructor(code: SdkErrorCode, message: string, options: AgentboxApiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "AgentboxApiError";
    this.code = code;
    this.status = options.status ?? 0;
    this.details = options.details;
    this.serverCode = options.serverCode;
  }

  /** The error as the API's error body (`{"error": {code, message, details?}}`). */
  toJSON(): { error: { code: SdkErrorCode; message: string; details?: Record<string, unknown> } } {
    const error: { code: SdkErrorCode; message: string; details?: Record<string, unknown> } = {
      code: this.code,
      message: this.message,
    };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

/** True when `e` is an error thrown by the SDK (and, if given, has that code). */
export function isAgentboxError(e: unknown): e is AgentboxApiError;
export function isAgentboxError<C extends SdkErrorCode>(e: unknown, code: C): e is AgentboxApiError & { readonly code: C };
export function isAgentboxError(e: unknown, code?: SdkErrorCode): e is AgentboxApiError {
  return e instanceof AgentboxApiError && (code === undefined || e.code === code);
}

export function isSdkErrorCode(value: unknown): value is SdkErrorCode {
  return value === CONNECTION_FAILED || isErrorCode(value);
}

const STATUS_CODES: Record<number, ErrorCode> = {
  400: "INVALID_REQUEST",
  401: "UNAUTHORIZED",
  403: "UNAUTHORIZED",
  404: "NOT_FOUND",
  405: "METHOD_NOT_ALLOWED",
  408: "TIMEOUT",
  409: "CONFLICT",
  413: "PAYLOAD_TOO_LARGE",
  429: "LIMIT_EXCEEDED",
  503: "RUNTIME_UNAVAILABLE",
  504: "TIMEOUT",
};

/**
 * The registry code for an HTTP status, used when a response carries no usable
 * error body (a proxy's HTML page, an empty body, an unknown code). A bare 502 is
 * reported as INTERNAL, not VERSION_MISMATCH: without a body it is far more likely
 * to come from a proxy than from the server.
 */
export function codeForStatus(status: number): ErrorCode {
  return STATUS_CODES[status] ?? (status >= 500 ? "INTERNAL" : "INVALID_REQUEST");
}
