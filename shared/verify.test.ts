import assert from 'node:assert/strict';
import { digestOf } from './digest.ts';
import { ContentMismatchError, heldUntil, readVerified, verifiedSlice } from './verify.ts';

async function* chunks(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) {
    await Promise.resolve();
    yield data.subarray(i, i + size);
  }
}

async function collect(gen: AsyncIterable<Uint8Array>): Promise<{ bytes: Buffer; error?: Error }> {
  const out: Uint8Array[] = [];
  try {
    for await (const c of gen) out.push(c);
  } catch (error) {
    return { bytes: Buffer.concat(out), error: error as Error };
  }
  return { bytes: Buffer.concat(out) };
}

describe('verifiedSlice', () => {
  const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
  const digest = digestOf(data);

  it('passes good content through whole', async () => {
    assert.deepEqual(await readVerified(chunks(data, 5), digest, data.length), data);
  });

  for (const [start, end] of [[0, 0], [3, 9], [5, 35], [35, 35], [0, 35], [4, 5]] as const) {
    it(`yields bytes ${start}-${end} across chunk boundaries`, async () => {
      const { bytes, error } = await collect(verifiedSlice(chunks(data, 5), digest, data.length, { start, end }));
      assert.equal(error, undefined);
      assert.deepEqual(bytes, data.subarray(start, end + 1));
    });
  }

  it('never yields the complete body when a byte is wrong, even in a slice that ends early', async () => {
    const bad = Buffer.from(data);
    bad[30] = 0x21;
    const whole = await collect(verifiedSlice(chunks(bad, 5), digest, data.length));
    assert.ok(whole.error instanceof ContentMismatchError);
    assert.ok(whole.bytes.length < data.length, 'the last piece must be held back');
    const slice = await collect(verifiedSlice(chunks(bad, 5), digest, data.length, { start: 0, end: 9 }));
    assert.ok(slice.error instanceof ContentMismatchError);
    assert.ok(slice.bytes.length < 10);
  });

  it('fails on short and long content', async () => {
    assert.ok((await collect(verifiedSlice(chunks(data.subarray(0, 30), 5), digest, data.length))).error instanceof ContentMismatchError);
    const long = Buffer.concat([data, Buffer.from('!')]);
    assert.ok((await collect(verifiedSlice(chunks(long, 5), digest, data.length))).error instanceof ContentMismatchError);
  });
});

describe('heldUntil', () => {
  const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');

  it('yields every chunk, the last only once the check passed', async () => {
    let pass!: () => void;
    const check = new Promise<void>((resolve) => (pass = resolve));
    const seen: string[] = [];
    const reading = (async () => {
      for await (const c of heldUntil(chunks(data, 10), check)) seen.push(Buffer.from(c).toString());
    })();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(seen, ['0123456789', 'abcdefghij', 'klmnopqrst']);
    pass();
    await reading;
    assert.deepEqual(seen.join(''), data.toString());
  });

  it('never yields the last chunk when the check fails after the source ended', async () => {
    const check = new Promise<void>((_, reject) => setTimeout(() => reject(new ContentMismatchError('wrong')), 20));
    const { bytes, error } = await collect(heldUntil(chunks(data, 10), check));
    assert.ok(error instanceof ContentMismatchError);
    assert.deepEqual(bytes, data.subarray(0, 30));
  });

  it('stops at the next chunk once the check has failed, not at the end', async () => {
    let fail!: (err: Error) => void;
    const check = new Promise<void>((_, reject) => (fail = reject));
    let asked = 0;
    async function* slow(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 100; i++) {
        asked++;
        if (i === 2) fail(new ContentMismatchError('wrong'));
        await new Promise((resolve) => setTimeout(resolve, 1));
        yield data.subarray(0, 1);
      }
    }
    const { error } = await collect(heldUntil(slow(), check));
    assert.ok(error instanceof ContentMismatchError);
    assert.ok(asked <= 4, `asked for ${asked} chunks after the check failed at the third`);
  });

  it('passes an empty source once the check passed', async () => {
    assert.deepEqual((await collect(heldUntil(chunks(Buffer.alloc(0), 1), Promise.resolve()))).bytes.length, 0);
  });
});
