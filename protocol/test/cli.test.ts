/** `@dt/protocol/cli`: the closed-pipe guard every command installs (its processes: test/cli-conventions.test.ts). */
import test from 'ava';
import { PassThrough } from 'node:stream';
import { ignoreClosedPipes } from '../src/cli.ts';

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`write ${code}`), { code });

test('ignoreClosedPipes drops EPIPE on its streams and rethrows every other stream error', (t) => {
  const out = new PassThrough();
  const err = new PassThrough();
  ignoreClosedPipes([out, err]);
  for (const s of [out, err]) {
    t.notThrows(() => s.emit('error', errno('EPIPE')));
    t.throws(() => s.emit('error', errno('EIO')), { message: 'write EIO' });
  }
});

test('ignoreClosedPipes guards stdout and stderr by default', (t) => {
  const before = [process.stdout.listenerCount('error'), process.stderr.listenerCount('error')];
  ignoreClosedPipes();
  t.deepEqual([process.stdout.listenerCount('error'), process.stderr.listenerCount('error')], [before[0]! + 1, before[1]! + 1]);
});
