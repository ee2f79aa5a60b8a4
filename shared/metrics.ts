/** Prometheus metrics: one registry a process, every name prefixed `shoal_`. */
import { Registry, collectDefaultMetrics } from 'prom-client';

export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'shoal_' });
  return registry;
}
