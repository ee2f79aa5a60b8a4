/**
 * The load client: AdmissionReviews over keep-alive HTTPS connections, each
 * connection sending its next review once the last answer is in (a closed
 * loop, as the API server's connections to a webhook behave). Answers are
 * checked after the timed part, so checking costs nothing while measuring.
 */
import { Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';
import { checkAnswer, type ReviewCase } from './reviews.ts';

/** Where the reviews go: a server on loopback whose certificate `ca` signed for `servername`. */
export interface Target {
  readonly port: number;
  readonly ca: string;
  readonly servername: string;
}

export interface PhaseResult {
  /** Per review, in the order the cases were given: ms from sending to the answer's last byte. */
  readonly latenciesMs: number[];
  /** Per review: when it was sent, ms after the timed part began. */
  readonly sentAtMs: number[];
  readonly wallMs: number;
  /** Connections opened during the timed part (0 while keep-alive holds). */
  readonly newConnections: number;
  /** Wrong answers, as `uid: what is wrong`. */
  readonly wrong: string[];
}

/** A review gets this long; a server that stalls fails the bench rather than hanging it. */
const ANSWER_TIMEOUT_MS = 10_000;

interface Sent {
  status: number;
  body: Buffer;
  ms: number;
  reused: boolean;
}

/** One keep-alive connection: an agent that holds at most one socket. */
class Connection {
  readonly #target: Target;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 1 });

  constructor(target: Target) {
    this.#target = target;
  }

  send(body: Buffer): Promise<Sent> {
    return new Promise((resolve, reject) => {
      const start = performance.now();
      const req = request(
        {
          host: '127.0.0.1',
          port: this.#target.port,
          method: 'POST',
          path: '/mutate',
          agent: this.#agent,
          ca: this.#target.ca,
          servername: this.#target.servername,
          // As kube-apiserver sends a review: JSON with its length, uncompressed.
          headers: { 'Content-Type': 'application/json', Accept: 'application/json, */*', 'Content-Length': String(body.length) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), ms: performance.now() - start, reused: req.reusedSocket }));
          res.on('error', reject);
        },
      );
      req.setTimeout(ANSWER_TIMEOUT_MS, () => req.destroy(new Error(`no answer from 127.0.0.1:${this.#target.port} within ${ANSWER_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

/**
 * Sends every case over one connection per entry of `primes`, and times each.
 * First each connection sends its prime, untimed: TLS handshakes stay out of
 * the figures. (Not one review on all of them: concurrent identical reviews
 * share one resolution, and may meet its answer in the cache.)
 */
export async function drive(target: Target, cases: readonly ReviewCase[], primes: readonly ReviewCase[]): Promise<PhaseResult> {
  const conns = primes.map(() => new Connection(target));
  try {
    const wrong: string[] = [];
    for (const [i, primed] of (await Promise.all(conns.map((c, i) => c.send(primes[i]!.body)))).entries()) {
      const problem = checkAnswer(primes[i]!, primed.status, primed.body);
      if (problem !== undefined) wrong.push(`${primes[i]!.uid} (priming): ${problem}`);
    }
    const answers = new Array<Sent>(cases.length);
    const sentAtMs = new Array<number>(cases.length);
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      conns.map(async (conn) => {
        for (let i = next++; i < cases.length; i = next++) {
          sentAtMs[i] = performance.now() - t0;
          answers[i] = await conn.send(cases[i]!.body);
        }
      }),
    );
    const wallMs = performance.now() - t0;
    for (const [i, c] of cases.entries()) {
      const problem = checkAnswer(c, answers[i]!.status, answers[i]!.body);
      if (problem !== undefined) wrong.push(`${c.uid}: ${problem}`);
    }
    return {
      latenciesMs: answers.map((a) => a.ms),
      sentAtMs,
      wallMs,
      newConnections: answers.filter((a) => !a.reused).length,
      wrong,
    };
  } finally {
    for (const conn of conns) conn.close();
  }
}
