import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createCertificateAuthority, issueServingCertificate } from '../../webhook/tls/self-signed.ts';
import { released } from '../chunk-pool.ts';
import { poisonPoolTakes } from '../testing.ts';
import { Http1Client } from './client.ts';

/**
 * Views of a read are handed out while later reads go into the rest of the
 * same buffer: a view must keep its bytes until it is released, however many
 * reads come after it. Every pool buffer is poisoned when taken, so one
 * reused too early shows as a changed view.
 */
describe('ReadArea: views handed out keep their bytes', function () {
  this.timeout(30_000);
  const BODY = randomBytes(4 * 1024 * 1024 + 777);
  // Random pieces at a varying pace: reads of every size, TLS records and partial ones.
  const answer: RequestListener = (_req, res) => {
    res.writeHead(200, { 'content-length': BODY.length });
    void (async () => {
      for (let at = 0; at < BODY.length && !res.destroyed; ) {
        const n = Math.min(BODY.length - at, randomInt(100, 100_000));
        if (!res.write(BODY.subarray(at, at + n))) await new Promise((resolve) => res.once('drain', resolve));
        at += n;
        if (randomInt(0, 8) === 0) await sleep(1);
      }
      res.end();
    })();
  };
  const servers: Server[] = [];
  let unpoison: () => void;
  beforeEach(function () {
    unpoison = poisonPoolTakes();
  });
  afterEach(async function () {
    unpoison();
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });

  /** Reads the body holding the last `hold` views, each checked as it is released. */
  async function readHolding(client: Http1Client, host: string, port: number, tls: boolean, hold: number): Promise<number> {
    const res = await client.request(host, port, { method: 'GET', path: '/', signal: AbortSignal.timeout(20_000) }, tls);
    const held: { view: Uint8Array; at: number }[] = [];
    let offset = 0;
    let checked = 0;
    const check = ({ view, at }: { view: Uint8Array; at: number }) => {
      assert.ok(Buffer.from(view.buffer, view.byteOffset, view.length).equals(BODY.subarray(at, at + view.length)), `bytes ${at}-${at + view.length - 1} changed while held`);
      released(view);
      checked++;
    };
    for await (const view of res.body) {
      held.push({ view, at: offset });
      offset += view.length;
      if (held.length > hold) check(held.shift()!);
    }
    held.forEach(check);
    assert.equal(offset, BODY.length);
    return checked;
  }

  for (const tls of [false, true]) {
    it(`over ${tls ? 'TLS' : 'plain TCP'}, with a consumer that holds the last views`, async function () {
      let server: Server;
      let client: Http1Client;
      if (tls) {
        const ca = createCertificateAuthority();
        const cert = issueServingCertificate(ca, { dnsNames: ['localhost'] });
        server = createHttpsServer({ cert: cert.cert, key: cert.key }, answer);
        client = new Http1Client({ idleTimeoutMs: 10_000, ca: ca.certPem });
      } else {
        server = createHttpServer(answer);
        client = new Http1Client({ idleTimeoutMs: 10_000 });
      }
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      try {
        for (const hold of [0, 3, 40]) assert.ok((await readHolding(client, 'localhost', port, tls, hold)) > 16, 'read in many pieces');
      } finally {
        client.close();
      }
    });
  }
});
