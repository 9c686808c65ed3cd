/**
 * The node-hid `HID` device API in front of card-applet-sim's VirtualHidCard: output reports
 * (with the report-id byte) in, input reports out, so every report goes through the protocol's
 * HID framing on both sides. {@link FakeNodeHid.unplug} does what node-hid does when the device
 * is pulled out: an `error` event, then every write throws.
 */
import { EventEmitter } from 'node:events';
import type { VirtualHidCard } from '@dt/card-applet-sim';
import type { NodeHidDeviceLike } from '../../src/index.ts';

/** A fake node-hid device over a virtual HID card. */
export class FakeNodeHid extends EventEmitter implements NodeHidDeviceLike {
  written = 0;
  closed = false;
  #unplugged = false;
  #pumping = false;
  readonly #reading = new AbortController();

  constructor(private readonly device: VirtualHidCard) {
    super();
  }

  write(values: number[] | Buffer): number {
    if (this.#unplugged) throw new Error('could not write to HID device');
    const bytes = Uint8Array.from(values as number[]);
    if (bytes[0] !== 0x00) throw new Error('report id missing');
    this.written++;
    void this.device.write(bytes.subarray(1)).then(() => this.#pump());
    return bytes.length;
  }

  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    const loop = (): void => {
      this.device.read({ signal: this.#reading.signal }).then(
        (r) => {
          if (this.#unplugged) return;
          this.emit('data', Buffer.from(r));
          loop();
        },
        (e: Error) => {
          this.#pumping = false;
          if (!this.#unplugged) this.emit('error', e);
        },
      );
    };
    loop();
  }

  /** The device is pulled out: node-hid's reader thread reports an error, and the handle is dead. */
  unplug(): void {
    this.#unplugged = true;
    // Its reads stop (a new handle of the device plugged back must get all the reports).
    this.#reading.abort();
    this.emit('error', new Error('could not read from HID device'));
  }

  close(): void {
    this.closed = true;
  }
}
