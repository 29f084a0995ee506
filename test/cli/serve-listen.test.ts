import { describe, expect, it } from 'vitest';
import { exportUrl, parsePskFile } from '../../src/cli/index.js';
import { parseNbdUrl } from '../../src/nbd/index.js';
import { expectCode } from '../support/error-code.js';

/** What `run` throws, as a rejected promise `expectCode` takes. */
const thrown = (run: () => unknown) => new Promise((resolve) => resolve(run()));

/*
 * What `serve` prints and reads, in process: the URLs it announces (which
 * the NBD client's own parser must read back to the same place and export)
 * and PSK files in the format psktool writes and nbdkit and qemu-nbd read.
 */

describe('exportUrl', () => {
  it('gives nbd://, nbds://, nbd+unix:// URLs that parse back to the same address and export', () => {
    const cases = [
      [
        { host: '127.0.0.1', port: 10809 },
        'vm1@nightly',
        false,
        'nbd://127.0.0.1:10809/vm1@nightly',
      ],
      [{ host: '::1', port: 10810 }, 'vm1', true, 'nbds://[::1]:10810/vm1'],
      [
        { path: '/run/vm 1.sock' },
        'a?b#c d',
        false,
        'nbd+unix:///a%3Fb%23c%20d?socket=/run/vm%201.sock',
      ],
    ] as const;
    for (const [address, name, tls, url] of cases) {
      expect(exportUrl(address, name, tls)).toBe(url);
      const parsed = parseNbdUrl(url);
      expect(parsed.exportName).toBe(name);
      expect(parsed.tls).toBe(tls);
      if ('path' in address) expect(parsed.path).toBe(address.path);
      else expect([parsed.host, parsed.port]).toEqual([address.host, address.port]);
    }
  });
});

describe('parsePskFile', () => {
  it('reads identity:hexkey lines, skipping blank ones', () => {
    const keys = parsePskFile('alice:0123abcd\n\nbob:FFEE\r\n', 'k.psk');
    expect([...keys]).toEqual([
      ['alice', '0123abcd'],
      ['bob', 'FFEE'],
    ]);
  });

  it('refuses a line without identity or with a key that is not whole hex bytes, naming the line but not the key', async () => {
    for (const [text, line] of [
      ['alice:0123\n:abcd\n', 2],
      ['alice:012\n', 1],
      ['alice\n', 1],
      ['alice:secretzz\n', 1],
    ] as const) {
      const err = await expectCode(
        thrown(() => parsePskFile(text, 'k.psk')),
        'EINVAL',
      );
      expect(err.message).toContain(`k.psk:${line} is not an identity:hexkey line`);
      expect(err.message).not.toContain('secret');
    }
    await expectCode(
      thrown(() => parsePskFile('\n', 'k.psk')),
      'EINVAL',
    );
  });
});
