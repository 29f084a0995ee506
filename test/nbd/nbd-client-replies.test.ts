import { describe, expect, it } from 'vitest';
import {
  type AwaitedReply,
  ReplyParser,
  type ReplySink,
} from '../../src/nbd/nbd-client-replies.js';
import {
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from '../../src/nbd/protocol.js';
import { seededBytes } from '../support/bytes.js';

/*
 * The client's reply parser (src/nbd/nbd-client-replies.ts) on its own:
 * headers and data prefixes are parsed in place when a chunk holds them
 * whole and gathered when they are split, so the same reply stream must
 * give the same result however the socket cuts it.
 */

/** Records what the parser hands over; requests by cookie. */
class RecordingSink implements ReplySink {
  readonly requests = new Map<number, AwaitedReply>();
  readonly completed: { cookie: number; error: AwaitedReply['error'] }[] = [];
  readonly violations: string[] = [];

  expect(cookie: number, command: number, offset: number, length: number): Uint8Array {
    const target = new Uint8Array(command === NBD_CMD_READ ? length : 0).fill(0xee);
    this.requests.set(cookie, {
      command,
      offset,
      length,
      target: command === NBD_CMD_READ ? target : undefined,
      covered: undefined,
      coveredBytes: 0,
      error: undefined,
    });
    return target;
  }

  lookup(cookie: number): AwaitedReply | undefined {
    return this.requests.get(cookie);
  }

  complete(cookie: number, request: AwaitedReply): void {
    this.requests.delete(cookie);
    this.completed.push({ cookie, error: request.error });
  }

  violation(message: string): void {
    this.violations.push(message);
  }
}

function structured(cookie: number, flags: number, type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeUInt32BE(cookie, 12);
  header.writeUInt32BE(payload.length, 16);
  return Buffer.concat([header, payload]);
}

function extended(
  cookie: number,
  flags: number,
  type: number,
  offset: number,
  payload: Buffer,
): Buffer {
  const header = Buffer.alloc(32);
  header.writeUInt32BE(NBD_EXTENDED_REPLY_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeUInt32BE(cookie, 12);
  header.writeUInt32BE(offset, 20);
  header.writeUInt32BE(payload.length, 28);
  return Buffer.concat([header, payload]);
}

function simple(cookie: number, errno: number, data = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  header.writeUInt32BE(errno, 4);
  header.writeUInt32BE(cookie, 12);
  return Buffer.concat([header, data]);
}

function dataPayload(offset: number, data: Uint8Array): Buffer {
  const payload = Buffer.alloc(8 + data.length);
  payload.writeUInt32BE(offset, 4);
  payload.set(data, 8);
  return payload;
}

function holePayload(offset: number, size: number): Buffer {
  const payload = Buffer.alloc(12);
  payload.writeUInt32BE(offset, 4);
  payload.writeUInt32BE(size, 8);
  return payload;
}

function errorPayload(errno: number, message: string): Buffer {
  const text = Buffer.from(message);
  const payload = Buffer.alloc(6 + text.length);
  payload.writeUInt32BE(errno, 0);
  payload.writeUInt16BE(text.length, 4);
  payload.set(text, 6);
  return payload;
}

/** Feeds `stream` to a fresh parser cut at `cuts` (ascending positions); returns what it recorded. */
function feed(
  stream: Buffer,
  cuts: number[],
  setUp: (sink: RecordingSink) => Uint8Array[],
  mode: { structured: boolean; extended: boolean },
) {
  const sink = new RecordingSink();
  const targets = setUp(sink);
  const parser = new ReplyParser(sink, mode.structured, mode.extended);
  let at = 0;
  for (const cut of [...cuts, stream.length]) {
    // A copy that is overwritten after the push: the parser must not keep the chunk.
    const chunk = Buffer.from(stream.subarray(at, cut));
    parser.push(chunk);
    chunk.fill(0xcc);
    at = cut;
  }
  return { completed: sink.completed, violations: sink.violations, targets };
}

describe('ReplyParser: the same result however the stream is cut', () => {
  // Small reads keep the stream short: every cut of it is parsed.
  const a = seededBytes(64, 1);
  const b = seededBytes(32, 2);
  const structuredStream = Buffer.concat([
    structured(1, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, dataPayload(192, a)),
    structured(2, 0, NBD_REPLY_TYPE_OFFSET_HOLE, holePayload(0, 32)),
    structured(3, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, errorPayload(5, 'bad sector')),
    structured(2, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, dataPayload(32, b)),
    structured(4, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, Buffer.alloc(0)),
  ]);
  const setUpStructured = (sink: RecordingSink) => [
    sink.expect(1, NBD_CMD_READ, 192, 64),
    sink.expect(2, NBD_CMD_READ, 0, 64),
    sink.expect(3, NBD_CMD_READ, 64, 512),
    sink.expect(4, NBD_CMD_WRITE, 0, 512),
  ];
  const mode = { structured: true, extended: false };
  const whole = feed(structuredStream, [], setUpStructured, mode);

  it('structured replies in one chunk', () => {
    expect(whole.violations).toEqual([]);
    expect(whole.completed.map((c) => c.cookie)).toEqual([1, 3, 2, 4]);
    expect(whole.completed[1]!.error).toEqual({ errno: 5, message: 'bad sector' });
    expect(whole.targets[0]).toEqual(a);
    expect(whole.targets[1]).toEqual(new Uint8Array([...new Uint8Array(32), ...b]));
  });

  it('structured replies cut at every position, and byte by byte', () => {
    const split = [...Array(structuredStream.length - 1).keys()].map((i) => [i + 1]);
    split.push([...Array(structuredStream.length - 1).keys()].map((i) => i + 1));
    for (const cuts of split) {
      const got = feed(structuredStream, cuts, setUpStructured, mode);
      expect(got.violations, `cut at ${cuts.join(',')}`).toEqual([]);
      expect(got.completed).toEqual(whole.completed);
      expect(got.targets).toEqual(whole.targets);
    }
  });

  it('simple replies cut at every position', () => {
    const stream = Buffer.concat([simple(7, 0, Buffer.from(a)), simple(8, 28), simple(9, 0)]);
    const setUp = (sink: RecordingSink) => [
      sink.expect(7, NBD_CMD_READ, 0, 64),
      sink.expect(8, NBD_CMD_READ, 0, 512),
      sink.expect(9, NBD_CMD_WRITE, 0, 512),
    ];
    const simpleMode = { structured: false, extended: false };
    for (let cut = 0; cut <= stream.length; cut++) {
      const got = feed(stream, [cut], setUp, simpleMode);
      expect(got.violations).toEqual([]);
      expect(got.completed).toEqual([
        { cookie: 7, error: undefined },
        { cookie: 8, error: { errno: 28, message: '' } },
        { cookie: 9, error: undefined },
      ]);
      expect(got.targets[0]).toEqual(a);
    }
  });

  it('extended replies cut at every position', () => {
    const stream = Buffer.concat([
      extended(5, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 4096, dataPayload(4096, b)),
      extended(6, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0, Buffer.alloc(0)),
    ]);
    const setUp = (sink: RecordingSink) => [
      sink.expect(5, NBD_CMD_READ, 4096, 32),
      sink.expect(6, NBD_CMD_WRITE, 0, 512),
    ];
    for (let cut = 0; cut <= stream.length; cut++) {
      const got = feed(stream, [cut], setUp, { structured: true, extended: true });
      expect(got.violations).toEqual([]);
      expect(got.completed.map((c) => c.cookie)).toEqual([5, 6]);
      expect(got.targets[0]).toEqual(b);
    }
  });
});

describe('ReplyParser: violations', () => {
  const mode = { structured: true, extended: false };

  it('content after a chunk that covered the whole read overlaps it', () => {
    const stream = Buffer.concat([
      structured(1, 0, NBD_REPLY_TYPE_OFFSET_DATA, dataPayload(0, seededBytes(1024, 3))),
      structured(1, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, holePayload(512, 512)),
    ]);
    const got = feed(stream, [], (sink) => [sink.expect(1, NBD_CMD_READ, 0, 1024)], mode);
    expect(got.violations).toEqual(['reply chunks overlap']);
    expect(got.completed).toEqual([]);
  });

  it('partial chunks that overlap each other, and ones that do not', () => {
    const half = seededBytes(512, 4);
    const overlapping = Buffer.concat([
      structured(1, 0, NBD_REPLY_TYPE_OFFSET_HOLE, holePayload(0, 600)),
      structured(1, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, dataPayload(512, half)),
    ]);
    const got = feed(overlapping, [], (sink) => [sink.expect(1, NBD_CMD_READ, 0, 1024)], mode);
    expect(got.violations).toEqual(['reply chunks overlap']);
    const adjacent = Buffer.concat([
      structured(1, 0, NBD_REPLY_TYPE_OFFSET_HOLE, holePayload(0, 512)),
      structured(1, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, dataPayload(512, half)),
    ]);
    const ok = feed(adjacent, [], (sink) => [sink.expect(1, NBD_CMD_READ, 0, 1024)], mode);
    expect(ok.violations).toEqual([]);
    expect(ok.targets[0]).toEqual(new Uint8Array([...new Uint8Array(512), ...half]));
  });

  it('a bad magic split after its first byte is still a bad magic', () => {
    const got = feed(Buffer.alloc(32, 0x11), [1], () => [], mode);
    expect(got.violations).toEqual(['bad reply magic 0x11111111']);
  });
});
