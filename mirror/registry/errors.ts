/**
 * The OCI distribution error catalogue, as far as a read-only mirror answers it.
 * Each code carries its usual HTTP status; responses are `{"errors":[{code,message,detail}]}`.
 */

export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  UNSUPPORTED: 405,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** `status` overrides the code's usual one where the spec's table has no better code (404 route, 416 range). */
  constructor(code: ErrorCode, message: string, detail?: unknown, status?: number) {
    super(message);
    this.name = 'RegistryError';
    this.code = code;
    this.detail = detail;
    this.status = status ?? ERROR_STATUS[code];
  }
  body(): string {
    const error: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.detail !== undefined) error.detail = this.detail;
    return JSON.stringify({ errors: [error] });
  }
}
