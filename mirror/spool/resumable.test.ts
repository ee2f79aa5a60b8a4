import assert from 'node:assert/strict';
import { digestOf } from '../../shared/digest.ts';
import { ContentMismatchError } from '../../shared/verify.ts';
import type { BlobSource } from './entry.ts';
import { resumable } from './resumable.ts';

const blob = Buffer.from('0123456789abcdefghij');

/** A source that fails after `cuts[i]` bytes on its i-th call, then serves the rest whole; records the offsets asked for. */
function cutting(cuts: number[], asked: number[]): BlobSource {
  return (offset) => {
    asked.push(offset);
    const cut = cuts.shift();
    return Promise.resolve(
      (async function* () {
        const end = cut === undefined ? blob.length : offset + cut;
        for (let at = offset; at < end; at += 3) {
          await Promise.resolve();
          yield blob.subarray(at, Math.min(at + 3, end));
        }
        if (cut !== undefined) throw new Error('connection reset');
      })(),
    );
  };
}

async function* once(chunk: Uint8Array): AsyncGenerator<Uint8Array> {
  await Promise.resolve();
  yield chunk;
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

const base = { digest: digestOf(blob), size: blob.length, maxResumes: 3, isResumable: () => true, signal: new AbortController().signal };

describe('resumable', function () {
  it('asks the source again from the byte where it failed, and yields every byte once', async function () {
    const asked: number[] = [];
    const resumes: number[] = [];
    const got = await collect(resumable({ ...base, source: cutting([7, 5], asked), onResume: (offset) => void resumes.push(offset) }));
    assert.ok(got.equals(blob));
    assert.deepEqual(asked, [0, 7, 12]);
    assert.deepEqual(resumes, [7, 12]);
  });

  it('gives up with the failure once the resumes are spent', async function () {
    const asked: number[] = [];
    await assert.rejects(collect(resumable({ ...base, maxResumes: 1, source: cutting([2, 2, 2], asked) })), /connection reset/);
    assert.deepEqual(asked, [0, 2]);
  });

  it('does not ask again after a failure the caller does not resume, nor after wrong content', async function () {
    const asked: number[] = [];
    await assert.rejects(collect(resumable({ ...base, isResumable: () => false, source: cutting([4], asked) })), /connection reset/);
    assert.deepEqual(asked, [0]);
    const long: BlobSource = () => Promise.resolve(once(Buffer.concat([blob, Buffer.from('!')])));
    await assert.rejects(collect(resumable({ ...base, source: long })), ContentMismatchError);
  });

  it('treats a source that ends early as a failure to resume', async function () {
    const asked: number[] = [];
    const short: BlobSource = (offset) => {
      asked.push(offset);
      return Promise.resolve(once(blob.subarray(offset, offset === 0 ? 10 : blob.length)));
    };
    assert.ok((await collect(resumable({ ...base, source: short }))).equals(blob));
    assert.deepEqual(asked, [0, 10]);
  });
});
