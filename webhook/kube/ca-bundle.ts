/**
 * Publishes the CA of the webhook's serving certificate into its
 * MutatingWebhookConfiguration, so the API server trusts the webhook.
 *
 * Reads the configuration first (how many webhooks, and whether they already
 * carry this CA: then nothing is written), then sends one JSON Patch (client-node's
 * default patch type) with, per webhook, a `test` of its name and an `add` of
 * `clientConfig.caBundle` (`add` sets the member whether or not it is there;
 * `replace` fails where it is missing). A merge patch would replace the whole
 * webhooks list. If the list changed between the read and the patch, a `test`
 * fails (422) and the whole thing is tried again.
 */
import type { AdmissionregistrationV1Api, V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import type { Logger } from '../../shared/log.ts';
import { describeApiError, KubeApiError, withSignal } from './api.ts';

export type CaBundleOutcome = 'patched' | 'unchanged';

const ATTEMPTS = 3;

/** Sets every webhook's clientConfig.caBundle of MutatingWebhookConfiguration `name` to `caPem`; throws KubeApiError saying why not. */
export async function publishCaBundle(
  api: AdmissionregistrationV1Api,
  name: string,
  caPem: string,
  logger: Logger,
  signal: AbortSignal = AbortSignal.timeout(30_000),
): Promise<CaBundleOutcome> {
  const caBundle = Buffer.from(caPem, 'utf8').toString('base64');
  const what = `mutatingwebhookconfiguration ${name}`;
  for (let attempt = 1; ; attempt++) {
    let config: V1MutatingWebhookConfiguration;
    try {
      config = await api.readMutatingWebhookConfiguration({ name }, withSignal(signal));
    } catch (err) {
      throw new KubeApiError(`cannot read ${what}`, describeApiError(err));
    }
    const webhooks = config.webhooks ?? [];
    if (webhooks.length === 0) throw new KubeApiError(`cannot publish the CA bundle`, { status: undefined, reason: undefined, message: `${what} has no webhooks` });
    if (webhooks.every((w) => w.clientConfig.caBundle === caBundle)) {
      logger.debug('CA bundle already published', { configuration: name, webhooks: webhooks.length });
      return 'unchanged';
    }
    const patch = webhooks.flatMap((w, i) => [
      { op: 'test', path: `/webhooks/${i}/name`, value: w.name },
      { op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: caBundle },
    ]);
    try {
      await api.patchMutatingWebhookConfiguration({ name, body: patch }, withSignal(signal));
      logger.debug('CA bundle patched', { configuration: name, webhooks: webhooks.length });
      return 'patched';
    } catch (err) {
      const failure = describeApiError(err);
      if (failure.status !== 422 || attempt >= ATTEMPTS) throw new KubeApiError(`cannot patch ${what}`, failure);
      logger.info('webhook list changed while publishing the CA bundle: trying again', { configuration: name, attempt });
    }
  }
}
