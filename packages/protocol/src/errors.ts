/**
 * The one registry of error codes. Every error that crosses a process boundary
 * (HTTP, runtime protocol, SDK) carries one of these codes.
 */
export const ERROR_CODES = {
  UNAUTHORIZED: 401,
  PERMISSION_DENIED: 403,
  INVALID_REQUEST: 400,
  NOT_FOUND: 404,
  SANDBOX_NOT_FOUND: 404,
  SANDBOX_NOT_READY: 409,
  CONFLICT: 409,
  LIMIT_EXCEEDED: 413,
  PAYLOAD_TOO_LARGE: 413,
  TIMEOUT: 408,
  PATH_OUTSIDE_SANDBOX: 400,
  METHOD_NOT_ALLOWED: 405,
  SESSION_TERMINATED: 410,
  WORKER_CRASHED: 500,
  RUNTIME_UNAVAILABLE: 503,
  /** An exposed port of a sandbox where nothing answers. */
  PORT_UNREACHABLE: 502,
  VERSION_MISMATCH: 502,
  INTERNAL: 500,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CODES, value);
}

/** An error with a registry code; thrown by services and mapped to HTTP by the server. */
export class AgentboxError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "AgentboxError";
    this.code = code;
    this.details = details;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code];
  }

  toBody(): ErrorBody {
    const error: ErrorBody["error"] = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}
