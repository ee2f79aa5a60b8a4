/**
 * The webhook's refusals. Bodies are a Kubernetes `Status`, which kube-apiserver
 * decodes from a failed webhook call and puts in its own error, so the message
 * reaches whoever reads the API server's log. Every request the webhook cannot
 * read is a 400, whatever the reason (the reason field says which).
 */

export type WebhookErrorCode = 'UnsupportedMediaType' | 'RequestEntityTooLarge' | 'BadRequest' | 'NotFound' | 'MethodNotAllowed' | 'InternalError';

const STATUS: Readonly<Record<WebhookErrorCode, number>> = {
  UnsupportedMediaType: 400,
  RequestEntityTooLarge: 400,
  BadRequest: 400,
  NotFound: 404,
  MethodNotAllowed: 405,
  InternalError: 500,
};

export class WebhookError extends Error {
  override name = 'WebhookError';
  readonly code: WebhookErrorCode;
  constructor(code: WebhookErrorCode, message: string) {
    super(message);
    this.code = code;
  }
  get status(): number {
    return STATUS[this.code];
  }
}

export interface StatusBody {
  readonly kind: 'Status';
  readonly apiVersion: 'v1';
  readonly metadata: Record<string, never>;
  readonly status: 'Failure';
  readonly message: string;
  readonly reason: WebhookErrorCode;
  readonly code: number;
}

export function statusBody(err: WebhookError): StatusBody {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: err.message, reason: err.code, code: err.status };
}
