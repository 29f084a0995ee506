import {
  type CallbackReader,
  callbackReaderOrRead,
  READ_CALLBACK,
  type ReadDone,
} from '../../src/base/index.js';
import type { BlockDevice } from '../../src/index.js';
import { PassThroughDevice } from './pass-through-device.js';

/** What a {@link CallbackReadDevice} does with its next READ_CALLBACK matching a range. */
export type CallbackMisbehaviour =
  /** Calls `done` twice with the same outcome. */
  | 'twice'
  /** Calls `done`, then throws. */
  | 'throw-after'
  /** Throws without calling `done`. */
  | 'throw';

/**
 * Passes I/O through to `inner` and has READ_CALLBACK (as FileDevice and
 * MemoryDevice do), which it serves from `inner`'s (over a MemoryDevice:
 * before it returns); it counts its `read`
 * and READ_CALLBACK calls, and a test can hold the next READ_CALLBACK of a
 * range — the bytes are read from `inner` only once released, so a write
 * landing meanwhile shows in them — or make it misbehave.
 */
export class CallbackReadDevice extends PassThroughDevice {
  readCalls = 0;
  callbackCalls = 0;
  /** READ_CALLBACKs given an `into` buffer, and the last such buffer. */
  intoCalls = 0;
  lastInto: Uint8Array | undefined;
  /** Answer READ_CALLBACK with a buffer of its own even when given `into`, as one that predates `into`. */
  ignoreInto = false;
  readonly #holds: { match: (offset: number) => boolean; opened: Promise<void> }[] = [];
  readonly #misbehaviours: { match: (offset: number) => boolean; kind: CallbackMisbehaviour }[] =
    [];
  readonly #innerReader: CallbackReader;

  constructor(inner: BlockDevice) {
    super(inner);
    this.#innerReader = callbackReaderOrRead(inner);
  }

  override read(offset: number, length: number): Promise<Uint8Array> {
    this.readCalls++;
    return super.read(offset, length);
  }

  /** Holds the next READ_CALLBACK at `offset` (any, if undefined) until the returned function is called. */
  hold(offset?: number): () => void {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.#holds.push({ match: (at) => offset === undefined || at === offset, opened });
    return open;
  }

  /** Makes the next READ_CALLBACK at `offset` (any, if undefined) misbehave as `kind` says. */
  misbehave(kind: CallbackMisbehaviour, offset?: number): void {
    this.#misbehaviours.push({ match: (at) => offset === undefined || at === offset, kind });
  }

  [READ_CALLBACK](offset: number, length: number, done: ReadDone, into?: Uint8Array): void {
    this.callbackCalls++;
    if (into !== undefined) {
      this.intoCalls++;
      this.lastInto = into;
    }
    const target = this.ignoreInto ? undefined : into;
    const m = this.#misbehaviours.findIndex((x) => x.match(offset));
    const kind = m < 0 ? undefined : this.#misbehaviours.splice(m, 1)[0]!.kind;
    if (kind === 'throw') throw new Error(`driver threw reading ${offset}`);
    const h = this.#holds.findIndex((x) => x.match(offset));
    const opened = h < 0 ? undefined : this.#holds.splice(h, 1)[0]!.opened;
    const serve = (): void =>
      this.#innerReader(
        offset,
        length,
        (err, data) => {
          done(err, data);
          if (kind === 'twice') done(err, data);
        },
        target,
      );
    if (opened === undefined) serve();
    else void opened.then(serve);
    if (kind === 'throw-after') throw new Error(`driver threw after reading ${offset}`);
  }
}
