import { expect } from 'vitest';
import type { ProgressEvent } from '../../src/index.js';

/**
 * Records the events an `onProgress` option gets, and checks what every
 * progress callback promises: one `total` throughout, `done` never
 * decreasing nor passing it, and a last event with `done === total`.
 */
export function recordProgress(): {
  events: ProgressEvent[];
  onProgress: (event: ProgressEvent) => void;
  /** Asserts the promises hold; returns the total. */
  expectWellFormed(operation: string): number;
} {
  const events: ProgressEvent[] = [];
  return {
    events,
    onProgress: (event) => {
      events.push({ ...event });
    },
    expectWellFormed(operation) {
      expect(events.length).toBeGreaterThan(0);
      const total = events[0]!.total;
      let done = 0;
      for (const event of events) {
        expect(event.operation).toBe(operation);
        expect(event.total).toBe(total);
        expect(event.done).toBeGreaterThanOrEqual(done);
        expect(event.done).toBeLessThanOrEqual(total);
        done = event.done;
      }
      expect(events.at(-1)!.done).toBe(total);
      return total;
    },
  };
}
