import { EventEmitter } from 'node:events';
import type * as TE from 'typed-emitter';

/** A map of event names to listener signatures. */
export type EventMap = TE.EventMap;

/** Node's EventEmitter with listener signatures checked against `E`. */
export type TypedEmitter<E extends EventMap> = TE.default<E>;

/** Node's EventEmitter constructor, typed: `class X extends TypedEventEmitter<Events>`. */
export const TypedEventEmitter = EventEmitter as unknown as new <
  E extends EventMap,
>() => TE.default<E>;
