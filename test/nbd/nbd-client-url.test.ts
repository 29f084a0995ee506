import { describe, expect, it } from 'vitest';
import { parseNbdUrl } from '../../src/nbd/index.js';
import { codeThrown } from '../support/error-code.js';

describe('parseNbdUrl (the NBD URI format)', () => {
  it("reads host, port and export name, as uri.md's table gives them", () => {
    const cases: [string, string, string, number][] = [
      ['nbd://example.com/disk', 'example.com', 'disk', 10809],
      ['nbd://example.com/', 'example.com', '', 10809],
      ['nbd://example.com', 'example.com', '', 10809],
      ['nbd://example.com//disk', 'example.com', '/disk', 10809],
      ['nbd://example.com/hello%20world', 'example.com', 'hello world', 10809],
      ['nbd://127.0.0.1:20000/vol@snap', '127.0.0.1', 'vol@snap', 20000],
      ['nbd://[::1]:10810/x', '::1', 'x', 10810],
    ];
    for (const [url, host, exportName, port] of cases) {
      expect(parseNbdUrl(url), url).toMatchObject({
        host,
        exportName,
        port,
        path: undefined,
        tls: false,
      });
    }
  });

  it('reads Unix socket URIs and the TLS schemes', () => {
    expect(parseNbdUrl('nbd+unix:///disk?socket=/run/nbd.sock')).toMatchObject({
      host: undefined,
      port: undefined,
      path: '/run/nbd.sock',
      exportName: 'disk',
      tls: false,
    });
    expect(parseNbdUrl('nbds://h/e').tls).toBe(true);
    expect(parseNbdUrl('nbds+unix:///e?socket=s&tls-hostname=srv').tlsServername).toBe('srv');
    expect(parseNbdUrl(new URL('nbd://h:1/e')).port).toBe(1);
  });

  it('refuses what is not an NBD URI, with EINVAL', () => {
    for (const bad of [
      'http://h/e',
      'not a url',
      'nbd+unix:///e',
      'nbd+unix://host/e?socket=s',
      'nbd:///e',
      'nbd://h/e?socket=s',
      'nbd://h/e?colour=blue',
      'nbd://h:99999/e',
      'nbd://h/%E0%A4%A',
      'nbds://h/e?tls-verify-peer=0',
      `nbd://h/${'x'.repeat(4097)}`,
    ]) {
      expect(
        codeThrown(() => parseNbdUrl(bad)),
        bad,
      ).toBe('EINVAL');
    }
  });
});
