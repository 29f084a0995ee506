import { describe, it } from 'vitest';
import { NbdDevice } from '../../src/index.js';
import { expectCode } from '../support/error-code.js';

describe('NbdDevice.connect options', () => {
  it('refuses bad options with EINVAL before connecting', async () => {
    const bad: [unknown, unknown][] = [
      [undefined, undefined],
      [null, undefined],
      [{ port: 0 }, undefined],
      [{ port: 1.5 }, undefined],
      [{ port: '10809' }, undefined],
      [{ path: '/s', host: 'h' }, undefined],
      [{ connections: 0 }, undefined],
      [{ connections: 17 }, undefined],
      [{ timeoutMs: 0 }, undefined],
      [{ timeoutMs: Number.NaN }, undefined],
      [{ tls: 'yes' }, undefined],
      ['nbd://h/e', { host: 'other' }],
      ['nbd://h/e', { exportName: 'other' }],
      ['nbds://h/e', { tls: false }],
      ['ftp://h/e', undefined],
    ];
    for (const [target, options] of bad) {
      await expectCode(
        NbdDevice.connect(target as string, options as undefined),
        'EINVAL',
        JSON.stringify([target, options]),
      );
    }
  });
});
