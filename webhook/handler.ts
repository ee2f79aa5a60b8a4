/**
 * The HTTP face of the webhook: `POST /mutate` takes an AdmissionReview and
 * answers one. A body it cannot read is a 400 with a Status saying why; the
 * server goes on serving.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../shared/log.ts';
import { ADMISSION_API_VERSION, parseAdmissionReview, ReviewError, type AdmissionReview, type IncomingReview } from './admission.ts';
import { statusBody, WebhookError } from './errors.ts';
import type { ReviewResult, WebhookMetrics } from './metrics.ts';
import type { PodMutator } from './mutate.ts';

/**
 * The largest request body read, in bytes. A CREATE review carries one pod, and
 * kube-apiserver refuses request bodies over 3 MiB; 4 MiB leaves room for the
 * review around it. A pods/ephemeralcontainers review carries the pod twice
 * (object and oldObject): for a pod over ~2 MiB it is refused, and the API server
 * applies the configuration's failurePolicy.
 */
export const MAX_REVIEW_BYTES = 4 * 1024 * 1024;

export interface MutateAppInit {
  mutator: PodMutator;
  metrics: WebhookMetrics;
  logger: Logger;
  /** Default MAX_REVIEW_BYTES. */
  maxBodyBytes?: number;
}

interface Locals {
  result?: ReviewResult;
}

export function createMutateApp(init: MutateAppInit): express.Express {
  const limit = init.maxBodyBytes ?? MAX_REVIEW_BYTES;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.use('/mutate', (_req: Request, res: Response<unknown, Locals>, next: NextFunction) => {
    const end = init.metrics.reviewDuration.startTimer();
    res.on('finish', () => {
      const result = res.locals.result ?? 'error';
      end({ result });
      init.metrics.reviews.inc({ result });
    });
    next();
  });

  app.post(
    '/mutate',
    (req: Request, _res: Response, next: NextFunction) => {
      if (req.is('application/json') === false || req.is('application/json') === null) {
        const given = req.headers['content-type'];
        return next(new WebhookError('UnsupportedMediaType', `Content-Type must be application/json, got ${given === undefined ? 'none' : JSON.stringify(given)}`));
      }
      next();
    },
    // The type was checked above. kube-apiserver does not compress webhook requests.
    express.json({
      limit,
      strict: true,
      inflate: false,
      type: () => true,
      // The parser would take an empty body for {}.
      verify: (_req, _res, buf) => {
        if (buf.length === 0) throw new Error('request body is empty: POST an AdmissionReview');
      },
    }),
    async (req: Request, res: Response<AdmissionReview, Locals>) => {
      let review: IncomingReview;
      try {
        review = parseAdmissionReview(req.body);
      } catch (err) {
        if (err instanceof ReviewError) throw new WebhookError('BadRequest', `not an AdmissionReview: ${err.message}`);
        throw err;
      }
      // The API server gave up on this call (its timeoutSeconds): stop resolving for it.
      const cancel = new AbortController();
      res.on('close', () => {
        if (!res.writableFinished) cancel.abort(new Error('the client went away'));
      });
      let answer;
      try {
        answer = await init.mutator.review(review.request, cancel.signal);
      } catch (err) {
        if (err instanceof ReviewError) throw new WebhookError('BadRequest', `not an AdmissionReview for a pod: ${err.message}`);
        throw err;
      }
      res.locals.result = answer.result;
      res.json({ apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response: answer.response });
    },
  );
  app.all('/mutate', (req: Request, _res: Response, next: NextFunction) => next(new WebhookError('MethodNotAllowed', `${req.method} is not allowed: POST an AdmissionReview`)));
  app.use((req: Request, _res: Response, next: NextFunction) => next(new WebhookError('NotFound', `no such endpoint ${req.path}: AdmissionReviews go to POST /mutate`)));

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const refusal = asWebhookError(err, limit);
    if (refusal === undefined) {
      // The client closed the connection mid-body: nobody to answer.
      init.logger.debug('request aborted', { path: req.path });
      return;
    }
    if (refusal.status >= 500) init.logger.error('review failed', { path: req.path, error: err as Error });
    else init.logger.warn('request refused', { path: req.path, status: refusal.status, reason: refusal.code, error: refusal.message });
    if (res.headersSent) return res.destroy();
    res.status(refusal.status).json(statusBody(refusal));
  });
  return app;
}

/** Errors from the JSON body parser carry a `type`; each becomes a refusal that says what to fix. */
function asWebhookError(err: unknown, limit: number): WebhookError | undefined {
  if (err instanceof WebhookError) return err;
  const e = err as { type?: string; status?: number; message?: string };
  switch (e.type) {
    case 'entity.too.large':
      return new WebhookError('RequestEntityTooLarge', `request body is larger than the ${formatBytes(limit)} limit`);
    case 'entity.parse.failed':
      return new WebhookError('BadRequest', `request body is not a JSON object: ${e.message ?? 'parse error'}`);
    case 'encoding.unsupported':
      return new WebhookError('UnsupportedMediaType', 'Content-Encoding is not supported: send the AdmissionReview uncompressed');
    case 'charset.unsupported':
      return new WebhookError('UnsupportedMediaType', `${e.message ?? 'unsupported charset'}: send UTF-8`);
    case 'entity.verify.failed':
      return new WebhookError('BadRequest', e.message ?? 'request body refused');
    case 'request.size.invalid':
      return new WebhookError('BadRequest', 'request body length does not match Content-Length');
    case 'request.aborted':
      return undefined;
  }
  return new WebhookError('InternalError', 'internal error (see the webhook log)');
}

function formatBytes(n: number): string {
  return n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n} bytes`;
}
