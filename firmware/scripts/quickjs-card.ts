/**
 * Runs the firmware bundle inside QuickJS (quickjs-emscripten) as a card: the
 * stand-in for an embedded JS engine on a microcontroller. The host (Node)
 * provides the hardware abstraction through three host functions (storage
 * read, storage write, random bytes); bytes cross the boundary as ArrayBuffer
 * copies (one copy each way, no text encoding), as a device's HAL hands the
 * engine its buffers.
 *
 * Used by `test/quickjs.test.ts` and `scripts/bench.ts`.
 */
import { getQuickJS, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from 'quickjs-emscripten';
import type { Storage } from '../src/index.ts';
import { GLOBAL_NAME } from './build.ts';

/** Options of {@link QuickJsCard.create}. */
export interface QuickJsCardOptions {
  /** The bundle's source text (`dist/firmware.js`). */
  readonly bundle: string;
  /** Storage living on the host side. */
  readonly storage: Storage;
  /** Random bytes from the host. */
  readonly random: (n: number) => Uint8Array;
  /** QuickJS heap limit in bytes (default 16 MiB). */
  readonly memoryLimit?: number;
}

/** QuickJS memory statistics of interest. */
export interface QuickJsMemory {
  /** Bytes currently allocated by the QuickJS heap. */
  readonly usedBytes: number;
  /** The heap limit. */
  readonly limitBytes: number;
}

// Glue evaluated after the bundle: builds the HAL over the host functions and
// exposes process/powerOn. Bytes come in and go out as ArrayBuffers (copied at
// the boundary by quickjs-emscripten); the answer is a copy of exactly its bytes.
const GLUE = `
(function () {
  function own(b) { return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer : b.slice().buffer; }
  var hal = {
    storage: {
      read: function (slot) { var b = __hostRead(slot); return b === undefined ? undefined : new Uint8Array(b); },
      write: function (slot, data) { __hostWrite(slot, own(data)); }
    },
    random: function (n) { return new Uint8Array(__hostRandom(n)); }
  };
  var card = new ${GLOBAL_NAME}.Applet(hal);
  globalThis.__process = function (apdu) {
    globalThis.__out = undefined; globalThis.__err = undefined;
    card.process(new Uint8Array(apdu)).then(function (r) { globalThis.__out = own(r); }, function (e) { globalThis.__err = String(e && e.stack || e); });
  };
  globalThis.__powerOn = function () { card.powerOn(); };
})();
`;

/** An ArrayBuffer holding exactly the bytes of `b` (the buffer itself when `b` spans all of it). */
function ownBuffer(b: Uint8Array): ArrayBuffer {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer ? b.buffer : b.slice().buffer;
}

/** A card running inside QuickJS. Call {@link dispose} when done. */
export class QuickJsCard {
  readonly #rt: QuickJSRuntime;
  readonly #vm: QuickJSContext;
  readonly #limit: number;

  private constructor(rt: QuickJSRuntime, vm: QuickJSContext, limit: number) {
    this.#rt = rt;
    this.#vm = vm;
    this.#limit = limit;
  }

  /** Loads the bundle into a fresh QuickJS runtime with a memory limit and creates the applet. */
  static async create(o: QuickJsCardOptions): Promise<QuickJsCard> {
    const QuickJS = await getQuickJS();
    const rt = QuickJS.newRuntime();
    const limit = o.memoryLimit ?? 16 * 1024 * 1024;
    rt.setMemoryLimit(limit);
    rt.setMaxStackSize(1024 * 1024);
    const vm = rt.newContext();
    const define = (name: string, fn: (...args: QuickJSHandle[]) => QuickJSHandle | undefined) => {
      const h = vm.newFunction(name, fn);
      vm.setProp(vm.global, name, h);
      h.dispose();
    };
    define('__hostRead', (slot) => {
      const v = o.storage.read(vm.getNumber(slot!));
      return v === undefined ? vm.undefined : vm.newArrayBuffer(ownBuffer(v));
    });
    define('__hostWrite', (slot, data) => {
      o.storage.write(
        vm.getNumber(slot!),
        vm.getArrayBuffer(data!).consume((l) => l.value.slice()),
      );
      return vm.undefined;
    });
    define('__hostRandom', (n) => vm.newArrayBuffer(ownBuffer(o.random(vm.getNumber(n!)))));
    const card = new QuickJsCard(rt, vm, limit);
    card.#eval(o.bundle);
    card.#eval(GLUE);
    return card;
  }

  #eval(code: string): void {
    const r = this.#vm.evalCode(code);
    this.#vm.unwrapResult(r).dispose();
  }

  /** The ArrayBuffer global `name` as bytes (a copy), or undefined when it is not one. */
  #bytes(name: string): Uint8Array | undefined {
    const h = this.#vm.getProp(this.#vm.global, name);
    try {
      return this.#vm.typeof(h) === 'undefined' ? undefined : this.#vm.getArrayBuffer(h).consume((l) => l.value.slice());
    } finally {
      h.dispose();
    }
  }

  /** The string global `name`, or undefined when it is not one. */
  #string(name: string): string | undefined {
    const h = this.#vm.getProp(this.#vm.global, name);
    try {
      return this.#vm.typeof(h) === 'string' ? this.#vm.getString(h) : undefined;
    } finally {
      h.dispose();
    }
  }

  /** Processes one command APDU inside QuickJS and returns the response APDU. */
  async process(apdu: Uint8Array): Promise<Uint8Array> {
    const arg = this.#vm.newArrayBuffer(ownBuffer(apdu));
    const fn = this.#vm.getProp(this.#vm.global, '__process');
    try {
      this.#vm.unwrapResult(this.#vm.callFunction(fn, this.#vm.undefined, arg)).dispose();
    } finally {
      fn.dispose();
      arg.dispose();
    }
    // The applet's promise chain settles once the pending jobs have run.
    this.#rt.executePendingJobs(-1).unwrap();
    const err = this.#string('__err');
    if (err !== undefined) throw new Error(`applet failed inside QuickJS: ${err}`);
    const out = this.#bytes('__out');
    if (out === undefined) throw new Error('applet did not answer inside QuickJS');
    return out;
  }

  /** Power-on reset of the applet inside QuickJS. */
  powerOn(): void {
    this.#eval('__powerOn()');
  }

  /** Current QuickJS heap use. */
  memory(): QuickJsMemory {
    const h = this.#rt.computeMemoryUsage();
    try {
      const m = this.#vm.dump(h) as { memory_used_size: number };
      return { usedBytes: m.memory_used_size, limitBytes: this.#limit };
    } finally {
      h.dispose();
    }
  }

  /** Frees the QuickJS context and runtime. */
  dispose(): void {
    this.#vm.dispose();
    this.#rt.dispose();
  }
}
