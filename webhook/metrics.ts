/** The webhook's own metrics. */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { ResolvedBy } from './resolve/types.ts';

/** patched: a patch was sent; unchanged: allowed as it came; error: no AdmissionReview answer (4xx/5xx). */
export type ReviewResult = 'patched' | 'unchanged' | 'error';

/**
 * pinned: replaced by a digest; already_pinned: the pod gave a digest; skipped: `shoal.dev/pin: "false"`;
 * unresolved: the resolver said no or the reference did not parse; timeout: not resolved within the budget.
 */
export type ImageOutcome = 'pinned' | 'already_pinned' | 'skipped' | 'unresolved' | 'timeout';

export interface WebhookMetrics {
  readonly reviews: Counter<'result'>;
  readonly images: Counter<'resolved_by' | 'outcome'>;
  readonly reviewDuration: Histogram<'result'>;
}

export function createWebhookMetrics(registry: Registry): WebhookMetrics {
  return {
    reviews: new Counter({
      name: 'shoal_webhook_reviews_total',
      help: 'AdmissionReviews answered, by result: patched, unchanged (allowed as they came), error (refused request: 4xx/5xx).',
      labelNames: ['result'],
      registers: [registry],
    }),
    images: new Counter({
      name: 'shoal_webhook_images_total',
      help: 'Container images seen in reviews, by where the digest came from (peer, upstream, cache; none) and outcome (pinned, already_pinned, skipped, unresolved, timeout).',
      labelNames: ['resolved_by', 'outcome'],
      registers: [registry],
    }),
    reviewDuration: new Histogram({
      name: 'shoal_webhook_review_duration_seconds',
      help: 'Time from the request to the answer of an AdmissionReview, by result.',
      labelNames: ['result'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5, 10],
      registers: [registry],
    }),
  };
}

export function countImage(metrics: WebhookMetrics, outcome: ImageOutcome, by: ResolvedBy | 'none' = 'none', count = 1): void {
  if (count > 0) metrics.images.inc({ resolved_by: by, outcome }, count);
}
