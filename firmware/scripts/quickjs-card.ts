/**
 * Runs the firmware bundle inside QuickJS (quickjs-emscripten) as a card: the
 * stand-in for an embedded JS engine on a microcontroller. The host (Node)
 * provides the hardware abstraction through three host functions (storage
 * read, storage write, random bytes); bytes cross the boundary as hex text.
 *
 * Used by `test/quickjs.test.ts` and `scripts/bench.ts`.
 */
import { getQuickJS, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from 'quickjs-emscripten';
import { fromHex, toHex } from '@dt/protocol';
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
// exposes process/powerOn with hex in and out.
const GLUE = `
(function () {
  var H = '0123456789abcdef';
  function toHex(b) { var s = ''; for (var i = 0; i < b.length; i++) s += H[b[i] >> 4] + H[b[i] & 15]; return s; }
  function fromHex(h) { var o = new Uint8Array(h.length / 2); for (var i = 0; i < o.length; i++) o[i] = parseInt(h.substr(i * 2, 2), 16); return o; }
  var hal = {
    storage: {
      read: function (slot) { var h = __hostRead(slot); return h === undefined ? undefined : fromHex(h); },
      write: function (slot, data) { __hostWrite(slot, toHex(data)); }
    },
    random: function (n) { return fromHex(__hostRandom(n)); }
  };
  var card = new ${GLOBAL_NAME}.Applet(hal);
  globalThis.__process = function (hex) {
    globalThis.__out = undefined; globalThis.__err = undefined;
    card.process(fromHex(hex)).then(function (r) { globalThis.__out = toHex(r); }, function (e) { globalThis.__err = String(e && e.stack || e); });
  };
  globalThis.__powerOn = function () { card.powerOn(); };
})();
`;

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
      return v === undefined ? vm.undefined : vm.newString(toHex(v));
    });
    define('__hostWrite', (slot, hex) => {
      o.storage.write(vm.getNumber(slot!), fromHex(vm.getString(hex!)));
      return vm.undefined;
    });
    define('__hostRandom', (n) => vm.newString(toHex(o.random(vm.getNumber(n!)))));
    const card = new QuickJsCard(rt, vm, limit);
    card.#eval(o.bundle);
    card.#eval(GLUE);
    return card;
  }

  #eval(code: string): void {
    const r = this.#vm.evalCode(code);
    this.#vm.unwrapResult(r).dispose();
  }

  #global(name: string): string | undefined {
    const h = this.#vm.getProp(this.#vm.global, name);
    try {
      return this.#vm.typeof(h) === 'string' ? this.#vm.getString(h) : undefined;
    } finally {
      h.dispose();
    }
  }

  /** Processes one command APDU inside QuickJS and returns the response APDU. */
  async process(apdu: Uint8Array): Promise<Uint8Array> {
    const arg = this.#vm.newString(toHex(apdu));
    const fn = this.#vm.getProp(this.#vm.global, '__process');
    try {
      this.#vm.unwrapResult(this.#vm.callFunction(fn, this.#vm.undefined, arg)).dispose();
    } finally {
      fn.dispose();
      arg.dispose();
    }
    // The applet's promise chain settles once the pending jobs have run.
    this.#rt.executePendingJobs(-1).unwrap();
    const err = this.#global('__err');
    if (err !== undefined) throw new Error(`applet failed inside QuickJS: ${err}`);
    const out = this.#global('__out');
    if (out === undefined) throw new Error('applet did not answer inside QuickJS');
    return fromHex(out);
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
