/**
 * Answer To Reset of the DT wallet card.
 *
 * @module
 */

/** Historical bytes: ASCII "DTWALLET". */
const HISTORICAL = [0x44, 0x54, 0x57, 0x41, 0x4c, 0x4c, 0x45, 0x54];

function buildAtr(): Uint8Array {
  // ISO/IEC 7816-3 section 8.2, in the form PC/SC part 3 uses for contactless cards:
  //   TS  3B   direct convention
  //   T0  88   Y1 = 8 (only TD1 follows), K = 8 historical bytes
  //   TD1 80   Y2 = 8 (only TD2 follows), T = 0
  //   TD2 01   Y3 = 0 (nothing follows), T = 1
  //   T1..TK   "DTWALLET"
  //   TCK      XOR of T0 .. TK; mandatory because a protocol other than T=0 is indicated
  const body = [0x88, 0x80, 0x01, ...HISTORICAL];
  let tck = 0;
  for (const b of body) tck ^= b;
  return Uint8Array.from([0x3b, ...body, tck]);
}

/**
 * The card's ATR: `3B 88 80 01 44 54 57 41 4C 4C 45 54 xx` (T=0 and T=1,
 * historical bytes "DTWALLET", TCK so that T0..TCK XOR to zero). Hosts serve
 * it to pcscd (vpcd "get ATR") and print it in `pcsc_scan`.
 */
export const ATR: Uint8Array = buildAtr();
