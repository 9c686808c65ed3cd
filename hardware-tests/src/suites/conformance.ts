/**
 * The conformance suite: every command of the DT applet and its status words
 * as protocol/SPEC.md §9 and §10 specify them (command table §9.2, status
 * words §9.3, chaining §9.4, 61xx/GET RESPONSE §9.5, preconditions §10.2,
 * PIN §10.6, PAY §10.7, SYNC/LOAD §10.9), sent as raw APDUs so that the
 * card's exact answer is checked, not what a host library makes of it.
 *
 * A lab card holds real value: the suite leaves the card as it found it,
 * except for the one payment of `pay-valid-handover` (recorded in its
 * details as `paid`) and a SYNC with `--ledger` (value-neutral). Wrong PINs
 * are tried only with `--pin` (so the counter can be restored at once), and
 * never when fewer than 2 tries are left; the PUK is never tried.
 *
 * @module
 */
import { randomBytes, randomInt } from 'node:crypto';
import {
  CLA,
  CardCommand,
  Capability,
  DT_AID,
  INS,
  LIMITS,
  Role,
  SW,
  buildCommand,
  changePinCommand,
  decodeResponse,
  encodeCommand,
  exchange,
  generateKeyCommand,
  generateKeyPair,
  getCertificatesCommand,
  getResponseCommand,
  getStatusCommand,
  hasCapability,
  identifyCommand,
  isChainedBlock,
  isMoreData,
  keyPairSigner,
  loadBeginCommand,
  loadCompleteCommand,
  lockCommand,
  openSigned,
  parseCardStatus,
  parseCertificates,
  parseSelectResponse,
  payCommand,
  selectCommand,
  setConfigCommand,
  setPinCommand,
  signMessage,
  swHex,
  swLength,
  syncBeginCommand,
  syncCompleteCommand,
  unblockPinCommand,
  verifyChain,
  verifyPinCommand,
  verifyRoot,
  type CardStatus,
  type CommandApdu,
  type CommandHeader,
  type PaymentRequest,
  type SelectResponse,
} from '@dt/protocol';
import { syncCard, type CardSession } from '@dt/terminal';
import type { CaseApi, LabContext, LabSuite } from '../suite.ts';
import { labExtras } from '../context.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
/** An instruction byte the applet does not have. */
const UNKNOWN_INS = 0xfe;

/** One raw answer. */
interface Answer {
  readonly data: Uint8Array;
  readonly sw: number;
}

/** Sends one raw APDU (no chaining, no GET RESPONSE) and splits the answer. */
async function send(s: CardSession, apdu: Uint8Array): Promise<Answer> {
  const r = decodeResponse(await s.transmit(apdu));
  return { data: r.data, sw: r.sw };
}

/** Sends a command with the protocol's chaining and GET RESPONSE handling. */
async function cmd(s: CardSession, c: CommandApdu): Promise<Answer> {
  return exchange(s, c);
}

// Commands come from the protocol's builders (SPEC §9.2); the probes of a wrong CLA, INS, P1
// or P2 take a builder's command and change that one byte, so every other byte is the real one.
const SELECT = (aid: Uint8Array = DT_AID): Uint8Array => encodeCommand(selectCommand(aid));
const APDU = (c: CommandApdu): Uint8Array => encodeCommand(c);
const GET_STATUS = (): Uint8Array => APDU(getStatusCommand());
const VERIFY_PIN_STATE = (): Uint8Array => APDU(verifyPinCommand());
/** GET RESPONSE for the `xx` of a 61xx status word (00: 256). */
const GET_RESPONSE = (sw: number): Uint8Array => APDU(getResponseCommand(swLength(sw)));
/** The 4 header bytes of a command followed by `rest` (hex): malformed APDUs no builder makes. */
const withHeader = (h: CommandHeader, rest: string): Uint8Array => Uint8Array.of(h.cla, h.ins, h.p1, h.p2, ...hex(rest));

function expectSw(c: CaseApi, what: string, a: Answer, sw: number): void {
  c.expect(`${what}: status word`, a.sw, sw, true);
}

async function select(c: CaseApi, s: CardSession): Promise<SelectResponse> {
  const a = await send(s, SELECT());
  expectSw(c, 'SELECT', a, SW.OK);
  return parseSelectResponse(a.data);
}

async function status(c: CaseApi, s: CardSession): Promise<CardStatus> {
  const a = await cmd(s, getStatusCommand());
  expectSw(c, 'GET STATUS', a, SW.OK);
  return parseCardStatus(a.data);
}

/** The persistent facts of a card that a refused command must leave as they were. */
function persistent(st: CardStatus): Record<string, unknown> {
  return {
    locked: st.locked,
    counter: st.counter,
    balance: st.balance,
    offlineValue: st.offlineValue,
    offlineCount: st.offlineCount,
    pinTries: st.pinTries,
    pukTries: st.pukTries,
    syncPending: st.syncPending,
    floor: st.floor,
    coins: st.coins,
    personalized: st.personalized,
  };
}

function expectUnchanged(c: CaseApi, before: CardStatus, after: CardStatus): void {
  const a = persistent(before);
  const b = persistent(after);
  for (const k of Object.keys(a)) c.expect(`card ${k} unchanged`, b[k], a[k]);
}

async function session<T>(ctx: LabContext, f: (s: CardSession) => Promise<T>): Promise<T> {
  const s = await ctx.openSession();
  try {
    return await f(s);
  } finally {
    await s.release();
  }
}

/** Random digits of `length`, different from `not` (a wrong PIN unrelated to the real one). */
function wrongDigits(length: number, not?: string): string {
  for (;;) {
    let d = '';
    for (let i = 0; i < length; i++) d += String(randomInt(10));
    if (d !== not) return d;
  }
}

/** Reassembles the data of the last PAY command (its chain) seen in `exchanges`. */
function lastPayRequest(exchanges: readonly { command: Uint8Array }[]): Uint8Array | undefined {
  let parts: Uint8Array[] = [];
  let found: Uint8Array | undefined;
  for (const x of exchanges) {
    const a = x.command;
    if (a.length < 5 || identifyCommand(a) !== 'PAY') continue;
    const lc = a[4]!;
    parts.push(a.subarray(5, 5 + lc));
    if (!isChainedBlock(a)) {
      found = Uint8Array.from(Buffer.concat(parts));
      parts = [];
    }
  }
  return found;
}

export const conformance: LabSuite = {
  name: 'conformance',
  description:
    'every command and status word of SPEC.md §9/§10: SELECT, GET STATUS/CERTIFICATES, PIN, PAY, SYNC/LOAD, PERSONALIZE; chaining, GET RESPONSE, Le; malformed APDUs, wrong CLA/INS/P1/P2, oversize data, commands out of order',
  async run(ctx, cases) {
    const extras = labExtras(ctx);
    const pin = extras?.pin;
    const declarePublic = (v: Uint8Array): void => extras?.recorder.declarePublic(v);
    const allowNonShort = (): void => extras?.recorder.allowNonShort();
    const now = (): number => Math.floor(Date.now() / 1000);
    let selectInfo: SelectResponse | undefined;
    let paidRequest: Uint8Array | undefined;

    // ------------------------------------------------------------ SELECT
    await cases.case('select-dt-applet', 'SELECT by AID (00 A4 04 00) answers 9000 with the SelectResponse map (§10.4)', async (c) => {
      await session(ctx, async (s) => {
        const r = await select(c, s);
        selectInfo = r;
        c.expect('applet version', r.applet, 1);
        c.expect('protocol version', r.protocol, 1);
        c.check(hasCapability(r, Capability.PAY), `capabilities 0x${r.capabilities.toString(16)} lack PAY (0x01)`);
        c.check(r.maxCommand >= 255, `maxCommand ${r.maxCommand} is below 255`);
        if (r.locked) c.check(r.card !== undefined && r.card.length === 16, 'a locked card announces its 16-byte key id');
        Object.assign(c.details, {
          applet: r.applet,
          protocol: r.protocol,
          capabilities: `0x${r.capabilities.toString(16)}`,
          locked: r.locked,
          maxCommand: r.maxCommand,
          ...(r.card ? { card: r.card } : {}),
        });
      });
    });

    await cases.case(
      'select-wrong-aid',
      'SELECT of another AID answers 6A82 and deselects the applet (a DT command then answers 6986)',
      async (c) => {
        await session(ctx, async (s) => {
          await select(c, s);
          const other = DT_AID.slice();
          other[9] = 0x02;
          expectSw(c, 'SELECT F0..02', await send(s, SELECT(other)), SW.APP_NOT_FOUND);
          expectSw(c, 'GET STATUS after the failed SELECT', await send(s, GET_STATUS()), SW.COMMAND_NOT_ALLOWED);
          await select(c, s);
        });
      },
    );

    await cases.case('select-partial-aid', 'SELECT with a truncated AID or no AID answers 6A82 (no partial-name matching)', async (c) => {
      await session(ctx, async (s) => {
        expectSw(c, 'SELECT first 5 AID bytes', await send(s, SELECT(DT_AID.subarray(0, 5))), SW.APP_NOT_FOUND);
        expectSw(c, 'SELECT without data', await send(s, APDU(buildCommand(CardCommand.SELECT))), SW.APP_NOT_FOUND);
        await select(c, s);
      });
    });

    await cases.case('select-wrong-p1p2', 'SELECT with P1/P2 other than 04/00 answers 6A86', async (c) => {
      await session(ctx, async (s) => {
        expectSw(c, 'SELECT P1=00', await send(s, APDU({ ...selectCommand(), p1: 0x00 })), SW.INCORRECT_P1P2);
        expectSw(c, 'SELECT P2=0C', await send(s, APDU({ ...selectCommand(), p2: 0x0c })), SW.INCORRECT_P1P2);
      });
    });

    // ------------------------------------------------------------ GET STATUS / CERTIFICATES
    await cases.case('get-status', 'GET STATUS (80 10) answers 9000 with a CardStatus that decodes strictly (§10.4)', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        const st = await status(c, s);
        c.check(st.balance >= 0 && Number.isSafeInteger(st.balance), 'balance is a safe integer');
        if (st.limits)
          c.check(st.offlineCount <= st.limits.offlineCount, `offlineCount ${st.offlineCount} above its limit ${st.limits.offlineCount}`);
        c.expect('pinVerified right after SELECT', st.pinVerified, false);
        Object.assign(c.details, {
          locked: st.locked,
          counter: st.counter,
          balance: st.balance,
          offlineValue: st.offlineValue,
          offlineCount: st.offlineCount,
          pinTries: st.pinTries,
          pukTries: st.pukTries,
          coins: st.coins,
          ...(st.limits ? { limits: st.limits } : {}),
          ...(st.currency ? { currency: st.currency } : {}),
        });
      });
    });

    await cases.case(
      'get-certificates',
      'GET CERTIFICATES (80 12) answers the chain [card, issuing bank]; the leaf certifies the key SELECT announced',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          const a = await cmd(s, getCertificatesCommand());
          if (!sel.locked && a.sw === SW.CONDITIONS_NOT_SATISFIED) c.skip('the card has no certificates yet (not personalized)');
          expectSw(c, 'GET CERTIFICATES', a, SW.OK);
          const certs = parseCertificates(a.data);
          c.check(certs.length === 2, 'the answer is a CBOR array of two certificates');
          const leaf = openSigned('Certificate', certs[0]!).message;
          c.expect('leaf role', leaf.role, Role.CARD);
          if (sel.card)
            c.expect(
              'leaf key id = SELECT card id',
              Buffer.from(leaf.cnf.coseKey.kid).toString('hex'),
              Buffer.from(sel.card).toString('hex'),
            );
          const t = ctx.terminal();
          if (t) {
            // The lab terminal pins the same root as the card's issuer: verify the chain for real.
            verifyChain(certs, { root: verifyRoot(t.identity.root, now()), at: now(), leafRole: Role.CARD });
            c.details.chainVerified = true;
          }
          c.details.bytes = a.data.length;
        });
      },
    );

    // ------------------------------------------------------------ 61xx / GET RESPONSE / Le
    await cases.case(
      'response-chaining',
      'a long answer comes as 256-byte pieces with 61xx and GET RESPONSE (00 C0), Le = xx, ending in 9000 (§9.5)',
      async (c) => {
        await session(ctx, async (s) => {
          await select(c, s);
          const whole = await cmd(s, getCertificatesCommand());
          if (whole.sw !== SW.OK) c.skip(`GET CERTIFICATES answered ${swHex(whole.sw)}: no long answer to test with`);
          if (whole.data.length <= 256) c.skip(`the certificate chain is only ${whole.data.length} bytes: no 61xx needed`);
          let a = await send(s, APDU(getCertificatesCommand()));
          const parts: Uint8Array[] = [a.data];
          let pieces = 1;
          c.expect('first piece length', a.data.length, 256);
          while (isMoreData(a.sw)) {
            const xx = a.sw & 0xff;
            const left = whole.data.length - parts.reduce((n, p) => n + p.length, 0);
            c.expect('61xx announces the bytes left (00: 256 or more)', xx, left >= 256 ? 0 : left);
            a = await send(s, GET_RESPONSE(a.sw));
            parts.push(a.data);
            c.check(++pieces <= 300, 'more than 300 GET RESPONSE pieces');
          }
          expectSw(c, 'last piece', a, SW.OK);
          c.expect('pieces reassembled = the whole answer', Buffer.concat(parts).toString('hex'), Buffer.from(whole.data).toString('hex'));
          Object.assign(c.details, { bytes: whole.data.length, pieces });
        });
      },
    );

    await cases.case(
      'le-handling',
      'Le shorter than the answer gives Le bytes and 61xx; the rest comes with GET RESPONSE; the card never answers 6Cxx for it',
      async (c) => {
        await session(ctx, async (s) => {
          await select(c, s);
          const full = await send(s, GET_STATUS());
          expectSw(c, 'GET STATUS Le=00', full, SW.OK);
          const first = await send(s, APDU({ ...getStatusCommand(), le: 8 }));
          c.check(isMoreData(first.sw), `GET STATUS Le=08 answered ${swHex(first.sw)}, expected 61xx`);
          c.expect('GET STATUS Le=08 data length', first.data.length, 8);
          c.expect('61xx = bytes left', first.sw & 0xff, full.data.length - 8);
          const rest = await send(s, GET_RESPONSE(first.sw));
          expectSw(c, 'GET RESPONSE', rest, SW.OK);
          c.expect(
            'Le=08 + GET RESPONSE = Le=00 answer',
            Buffer.concat([first.data, rest.data]).toString('hex'),
            Buffer.from(full.data).toString('hex'),
          );
        });
      },
    );

    await cases.case('get-response-nothing-pending', 'GET RESPONSE with nothing pending answers 6985', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        expectSw(c, 'GET RESPONSE', await send(s, APDU(getResponseCommand(256))), SW.CONDITIONS_NOT_SATISFIED);
      });
    });

    await cases.case('get-response-wrong-p1p2', 'GET RESPONSE with P1/P2 not 00 answers 6A86 and keeps the pending answer', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        const first = await send(s, APDU({ ...getStatusCommand(), le: 8 }));
        c.check(isMoreData(first.sw), `GET STATUS Le=08 answered ${swHex(first.sw)}, expected 61xx`);
        expectSw(c, 'GET RESPONSE P1=01', await send(s, APDU({ ...getResponseCommand(swLength(first.sw)), p1: 0x01 })), SW.INCORRECT_P1P2);
        const rest = await send(s, GET_RESPONSE(first.sw));
        expectSw(c, 'GET RESPONSE after the refused one', rest, SW.OK);
        c.expect('rest length', rest.data.length, first.sw & 0xff);
      });
    });

    await cases.case('get-response-dropped', 'any other command drops a pending answer: GET RESPONSE then answers 6985', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        const first = await send(s, APDU({ ...getStatusCommand(), le: 8 }));
        c.check(isMoreData(first.sw), `GET STATUS Le=08 answered ${swHex(first.sw)}, expected 61xx`);
        expectSw(c, 'GET STATUS', await send(s, GET_STATUS()), SW.OK);
        expectSw(c, 'GET RESPONSE', await send(s, APDU(getResponseCommand(256))), SW.CONDITIONS_NOT_SATISFIED);
      });
    });

    // ------------------------------------------------------------ PIN
    await cases.case(
      'verify-pin-state',
      'VERIFY PIN without data reports the PIN state (63Cx, x tries left) without using a try',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const a = await send(s, VERIFY_PIN_STATE());
          expectSw(c, 'VERIFY PIN (no data)', a, before.pinTries === 0 ? SW.PIN_BLOCKED : SW.wrongPin(before.pinTries));
          c.expect('PIN tries after', (await status(c, s)).pinTries, before.pinTries);
          c.details.pinTries = before.pinTries;
        });
      },
    );

    await cases.case(
      'verify-pin-bad-format',
      'VERIFY PIN with a PIN that is not 4..12 ASCII digits answers 6A80 without using a try',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const long = wrongDigits(13);
          declarePublic(enc(long));
          for (const [what, v] of [
            ['non-digits', '12a4'],
            ['3 digits', '123'],
            ['13 digits', long],
          ] as const) {
            expectSw(c, `VERIFY PIN ${what}`, await send(s, APDU(verifyPinCommand(enc(v)))), SW.WRONG_DATA);
          }
          c.expect('PIN tries after', (await status(c, s)).pinTries, before.pinTries);
        });
      },
    );

    await cases.case(
      'verify-pin-wrong',
      'a wrong PIN answers 63Cx with one try less; the right PIN then answers 9000 and restores the tries (needs --pin)',
      async (c) => {
        if (!pin) c.skip('give --pin (or DT_LAB_PIN) to try a wrong PIN: without the right PIN the lost try could not be restored');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          if (before.pinTries < 2) c.skip(`only ${before.pinTries} PIN tries left: a wrong PIN could block the card`);
          const wrong = wrongDigits(pin!.length, pin);
          declarePublic(enc(wrong));
          expectSw(c, 'VERIFY wrong PIN', await send(s, APDU(verifyPinCommand(enc(wrong)))), SW.wrongPin(before.pinTries - 1));
          const right = await send(s, APDU(verifyPinCommand(enc(pin!))));
          expectSw(c, "VERIFY the right PIN (is --pin this card's PIN?)", right, SW.OK);
          c.expect('PIN tries restored', (await status(c, s)).pinTries, before.pinTries);
        });
      },
    );

    await cases.case(
      'verify-pin-session',
      'the right PIN answers 9000 and sets the PIN-verified state; SELECT clears it (needs --pin)',
      async (c) => {
        if (!pin) c.skip('give --pin (or DT_LAB_PIN) to verify the PIN');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          if (before.pinTries < 2) c.skip(`only ${before.pinTries} PIN tries left`);
          expectSw(c, 'VERIFY PIN', await send(s, APDU(verifyPinCommand(enc(pin!)))), SW.OK);
          expectSw(c, 'VERIFY PIN (no data) after success', await send(s, VERIFY_PIN_STATE()), SW.OK);
          c.expect('pinVerified in GET STATUS', (await status(c, s)).pinVerified, true);
          await select(c, s);
          expectSw(c, 'VERIFY PIN (no data) after SELECT', await send(s, VERIFY_PIN_STATE()), SW.wrongPin(before.pinTries));
        });
      },
    );

    await cases.case(
      'change-pin-bad-format',
      'CHANGE PIN with malformed data or a non-digit PIN answers 6A80 without using a try',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          expectSw(c, 'CHANGE PIN not CBOR', await send(s, APDU(buildCommand(CardCommand.CHANGE_PIN, hex('010203')))), SW.WRONG_DATA);
          const next = wrongDigits(4, pin);
          declarePublic(enc(next));
          expectSw(c, 'CHANGE PIN current "12a4"', await send(s, APDU(changePinCommand(enc('12a4'), enc(next)))), SW.WRONG_DATA);
          c.expect('PIN tries after', (await status(c, s)).pinTries, before.pinTries);
        });
      },
    );

    await cases.case(
      'change-pin-same',
      'CHANGE PIN from the PIN to the same PIN answers 9000 and leaves the tries at their maximum (needs --pin)',
      async (c) => {
        if (!pin) c.skip('give --pin (or DT_LAB_PIN) to change the PIN (to itself)');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          if (before.pinTries < 2) c.skip(`only ${before.pinTries} PIN tries left`);
          expectSw(c, 'CHANGE PIN', await send(s, APDU(changePinCommand(enc(pin!), enc(pin!)))), SW.OK);
          c.expect('PIN tries after', (await status(c, s)).pinTries, before.pinTries);
          expectSw(c, 'VERIFY PIN after CHANGE', await send(s, APDU(verifyPinCommand(enc(pin!)))), SW.OK);
        });
      },
    );

    await cases.case(
      'unblock-pin-bad-format',
      'UNBLOCK PIN with malformed data or a non-digit PUK answers 6A80 without using a PUK try (a wrong PUK is never tried)',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          expectSw(c, 'UNBLOCK PIN not CBOR', await send(s, APDU(buildCommand(CardCommand.UNBLOCK_PIN, hex('a0')))), SW.WRONG_DATA);
          const next = wrongDigits(4, pin);
          declarePublic(enc(next));
          expectSw(c, 'UNBLOCK PIN puk "abcdefgh"', await send(s, APDU(unblockPinCommand(enc('abcdefgh'), enc(next)))), SW.WRONG_DATA);
          const after = await status(c, s);
          c.expect('PUK tries after', after.pukTries, before.pukTries);
          c.expect('PIN tries after', after.pinTries, before.pinTries);
        });
      },
    );

    // ------------------------------------------------------------ PAY refused
    await cases.case('pay-malformed', 'PAY whose data is not a signed PaymentRequest answers 6A80; nothing is signed', async (c) => {
      await session(ctx, async (s) => {
        const sel = await select(c, s);
        if (!sel.locked) c.skip('the card is not personalized');
        const before = await status(c, s);
        expectSw(c, 'PAY 3 bytes', await send(s, APDU(payCommand(hex('010203')))), SW.WRONG_DATA);
        expectSw(c, 'PAY empty CBOR map', await send(s, APDU(payCommand(hex('a0')))), SW.WRONG_DATA);
        expectUnchanged(c, before, await status(c, s));
      });
    });

    await cases.case(
      'pay-oversize',
      'PAY with 8193 bytes of data (over the 8192-byte decode limit, sent chained) answers 6A80; every block before is 9000',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const a = await cmd(s, payCommand(new Uint8Array(8193).fill(0xa5)));
          expectSw(c, 'PAY 8193 bytes', a, SW.WRONG_DATA);
          expectUnchanged(c, before, await status(c, s));
        });
      },
    );

    await cases.case(
      'chain-over-limit',
      "a command chain beyond the card's maxCommand is answered 6700 at the block that overflows and discarded (§9.4)",
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (sel.maxCommand > 70_000) c.skip(`maxCommand ${sel.maxCommand}: too many blocks to test`);
          const block = new Uint8Array(255).fill(0x5a);
          let sent = 0;
          let blocks = 0;
          for (;;) {
            ctx.progress('chaining', sent, sel.maxCommand);
            const a = await send(s, APDU({ ...buildCommand(CardCommand.PAY, block), cla: CardCommand.PAY.cla | CLA.CHAINING }));
            blocks++;
            sent += block.length;
            if (sent <= sel.maxCommand) {
              expectSw(c, `chained block ${blocks} (${sent} bytes so far)`, a, SW.OK);
              continue;
            }
            expectSw(c, `block ${blocks} that goes over ${sel.maxCommand} bytes`, a, SW.WRONG_LENGTH);
            break;
          }
          expectSw(c, 'GET STATUS after the discarded chain', await send(s, GET_STATUS()), SW.OK);
          Object.assign(c.details, { blocks, bytes: sent, maxCommand: sel.maxCommand });
        });
      },
    );

    await cases.case(
      'chain-interrupted',
      'a chain interrupted by another command answers 6883 and is discarded; the next command works',
      async (c) => {
        await session(ctx, async (s) => {
          await select(c, s);
          expectSw(
            c,
            'first PAY block (chaining)',
            await send(s, APDU({ ...buildCommand(CardCommand.PAY, new Uint8Array(255)), cla: CardCommand.PAY.cla | CLA.CHAINING })),
            SW.OK,
          );
          expectSw(c, 'GET STATUS in the middle of the chain', await send(s, GET_STATUS()), SW.CHAIN_EXPECTED);
          expectSw(c, 'GET STATUS again', await send(s, GET_STATUS()), SW.OK);
        });
      },
    );

    const request = (t: NonNullable<ReturnType<LabContext['terminal']>>, over: Partial<PaymentRequest> = {}): PaymentRequest => ({
      amount: ctx.options.amount,
      currency: t.identity.currency,
      terminal: t.identity.kid,
      merchant: t.identity.merchant.id,
      mcc: t.identity.merchant.mcc,
      nonce: rnd(16),
      time: now(),
      chain: t.identity.chain,
      ...over,
    });

    await cases.case(
      'pay-bad-terminal-signature',
      'PAY with a request whose signature is not the certified terminal key (sent chained, CLA 90 blocks of <= 255 bytes) answers 6A80; nothing is signed',
      async (c) => {
        const t = ctx.terminal();
        if (!t) c.skip(ctx.terminalMissing ?? 'no lab terminal');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const forger = keyPairSigner(generateKeyPair(rnd));
          const bytes = signMessage('PaymentRequest', request(t!), { kid: t!.identity.kid, sign: forger.sign });
          const from = extras?.recorder.current.length ?? 0;
          const a = await cmd(s, payCommand(bytes));
          expectSw(c, 'PAY', a, SW.WRONG_DATA);
          const blocks = (extras?.recorder.current ?? []).slice(from).filter((x) => identifyCommand(x.command) === 'PAY');
          if (extras) {
            c.check(blocks.length === Math.ceil(bytes.length / 255), `the request of ${bytes.length} bytes went in ${blocks.length} APDUs`);
            blocks.forEach((b, i) => {
              const last = i === blocks.length - 1;
              c.expect(`block ${i + 1} CLA`, b.command[0], last ? CardCommand.PAY.cla : CardCommand.PAY.cla | CLA.CHAINING, true);
              c.check((b.command[4] ?? 0) <= 255 && b.command.length <= 261, `block ${i + 1} is a short APDU`);
              if (!last)
                c.expect(
                  `block ${i + 1} answer`,
                  b.response ? (b.response[b.response.length - 2]! << 8) | b.response[b.response.length - 1]! : -1,
                  SW.OK,
                  true,
                );
            });
          }
          expectUnchanged(c, before, await status(c, s));
          Object.assign(c.details, { requestBytes: bytes.length, blocks: blocks.length });
        });
      },
    );

    await cases.case(
      'pay-other-currency',
      'PAY with a correctly signed request in another currency answers 6A80; nothing is signed',
      async (c) => {
        const t = ctx.terminal();
        if (!t) c.skip(ctx.terminalMissing ?? 'no lab terminal');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const currency = (before.currency ?? 398) === 840 ? 978 : 840;
          const a = await cmd(s, payCommand(signMessage('PaymentRequest', request(t!, { currency }), t!.identity.signer)));
          if (before.syncPending) expectSw(c, 'PAY (sync pending)', a, SW.CONDITIONS_NOT_SATISFIED);
          else expectSw(c, `PAY in currency ${currency}`, a, SW.WRONG_DATA);
          expectUnchanged(c, before, await status(c, s));
          c.details.currency = currency;
        });
      },
    );

    await cases.case('pay-above-limit', "PAY above the card's per-payment limit answers 6985; nothing is signed", async (c) => {
      const t = ctx.terminal();
      if (!t) c.skip(ctx.terminalMissing ?? 'no lab terminal');
      await session(ctx, async (s) => {
        const sel = await select(c, s);
        if (!sel.locked) c.skip('the card is not personalized');
        const before = await status(c, s);
        if (!before.limits) c.skip('the card announces no limits');
        const amount = before.limits!.perPayment + 1;
        if (amount > LIMITS.maxAmount) c.skip('the per-payment limit is the protocol maximum');
        const a = await cmd(s, payCommand(signMessage('PaymentRequest', request(t!, { amount }), t!.identity.signer)));
        expectSw(c, `PAY ${amount}`, a, SW.CONDITIONS_NOT_SATISFIED);
        expectUnchanged(c, before, await status(c, s));
        c.details.amount = amount;
      });
    });

    await cases.case(
      'pay-needs-pin',
      "PAY above the card's CVM limit without a verified PIN answers 6982; nothing is signed",
      async (c) => {
        const t = ctx.terminal();
        if (!t) c.skip(ctx.terminalMissing ?? 'no lab terminal');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          if (hasCapability(sel, Capability.ON_DEVICE_CONFIRM))
            c.skip('the device asks its holder (ON_DEVICE_CONFIRM): no 6982 without a refusal on the device');
          const before = await status(c, s);
          const l = before.limits;
          if (!l) c.skip('the card announces no limits');
          const amount = l!.cvmLimit + 1;
          const fits =
            amount <= l!.perPayment &&
            amount <= before.balance &&
            before.offlineValue + amount <= l!.offlineTotal &&
            before.offlineCount + 1 <= l!.offlineCount &&
            !before.syncPending;
          if (!fits) c.skip(`an amount of ${amount} (CVM limit + 1) does not fit the card's limits or balance`);
          const a = await cmd(s, payCommand(signMessage('PaymentRequest', request(t!, { amount }), t!.identity.signer)));
          expectSw(c, `PAY ${amount}`, a, SW.SECURITY_NOT_SATISFIED);
          expectUnchanged(c, before, await status(c, s));
          c.details.amount = amount;
        });
      },
    );

    // ------------------------------------------------------------ PAY accepted
    await cases.case(
      'pay-valid-handover',
      'a PAY from the lab terminal is approved: the handover comes through 61xx/GET RESPONSE and validates; the balance drops by the amount',
      async (c) => {
        const t = ctx.terminal();
        if (!t) c.skip(ctx.terminalMissing ?? 'no lab terminal');
        const amount = ctx.options.amount;
        const before = await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          return status(c, s);
        });
        const l = before.limits;
        if (before.syncPending) c.skip('a sync is pending on the card');
        if (l && (before.offlineCount + 1 > l.offlineCount || before.offlineValue + amount > l.offlineTotal))
          c.skip('the card is at its offline limits: sync it first (give --ledger)');
        if (before.balance < amount) c.skip(`the card holds ${before.balance}, less than ${amount}`);
        const from = extras?.recorder.current.length ?? 0;
        const outcome = await t!.kernel.charge(ctx.reader, amount, { signal: ctx.signal });
        c.details.outcome = outcome.kind;
        if (outcome.kind !== 'APPROVED') c.fail(`outcome ${outcome.kind}${'reason' in outcome ? ` (${String(outcome.reason)})` : ''}`);
        c.details.paid = amount;
        const exchanges = (extras?.recorder.current ?? []).slice(from);
        paidRequest = lastPayRequest(exchanges);
        if (extras) {
          const gr = exchanges.filter((x) => identifyCommand(x.command) === 'GET_RESPONSE').length;
          c.check(gr > 0, 'the handover came without GET RESPONSE (expected 61xx pieces for an answer over 256 bytes)');
          c.details.getResponses = gr;
        }
        const after = await session(ctx, async (s) => {
          await select(c, s);
          return status(c, s);
        });
        c.expect('balance after', after.balance, before.balance - amount);
        c.expect('counter after', after.counter, before.counter + 1);
        c.expect('offlineCount after', after.offlineCount, before.offlineCount + 1);
        Object.assign(c.details, { balanceBefore: before.balance, balanceAfter: after.balance, counter: after.counter });
      },
    );

    await cases.case(
      'pay-nonce-replay',
      'the same PaymentRequest sent again answers 6984 (nonce already signed); nothing is signed',
      async (c) => {
        if (!paidRequest) c.skip('no payment was made in this run (pay-valid-handover did not pass)');
        await session(ctx, async (s) => {
          await select(c, s);
          const before = await status(c, s);
          expectSw(c, 'PAY replayed', await cmd(s, payCommand(paidRequest!)), SW.DATA_INVALID);
          expectUnchanged(c, before, await status(c, s));
        });
      },
    );

    // ------------------------------------------------------------ SYNC / LOAD
    await cases.case('sync-complete-without-begin', 'SYNC COMPLETE and LOAD COMPLETE with nothing pending answer 6985', async (c) => {
      await session(ctx, async (s) => {
        const sel = await select(c, s);
        if (!sel.locked) c.skip('the card is not personalized');
        const before = await status(c, s);
        if (before.syncPending) c.skip('a sync is pending on the card: COMPLETE would check a receipt');
        expectSw(c, 'SYNC COMPLETE', await send(s, APDU(syncCompleteCommand(rnd(16)))), SW.CONDITIONS_NOT_SATISFIED);
        expectSw(c, 'LOAD COMPLETE', await send(s, APDU(loadCompleteCommand(rnd(16)))), SW.CONDITIONS_NOT_SATISFIED);
        expectUnchanged(c, before, await status(c, s));
      });
    });

    await cases.case(
      'sync-begin-bad-challenge',
      'SYNC/LOAD BEGIN with a challenge that is not 16 bytes answers 6700; no counter is used',
      async (c) => {
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          expectSw(c, 'SYNC BEGIN 15 bytes', await send(s, APDU(syncBeginCommand(rnd(15)))), SW.WRONG_LENGTH);
          expectSw(c, 'LOAD BEGIN 17 bytes', await send(s, APDU(loadBeginCommand(rnd(17)))), SW.WRONG_LENGTH);
          expectUnchanged(c, before, await status(c, s));
        });
      },
    );

    await cases.case(
      'sync',
      'SYNC BEGIN/COMPLETE against the ledger: the card takes the receipt; balance unchanged, offline counters back to 0 (needs --ledger)',
      async (c) => {
        if (!ctx.ledgerUrl) c.skip('give --ledger <url> to sync the card');
        await session(ctx, async (s) => {
          const sel = await select(c, s);
          if (!sel.locked) c.skip('the card is not personalized');
          const before = await status(c, s);
          const r = await syncCard(s, ctx.ledgerUrl!, { signal: ctx.signal });
          if (!r.ok) return c.fail(`the ledger refused the sync: HTTP ${r.status} ${r.code}${r.message ? ` ${r.message}` : ''}`);
          const after = await status(c, s);
          // A sync moves no value of its own; what the ledger's receipt adds (a pending bank load, a merchant's refund,
          // an orphan transfer voided back to the card, a revoked card redeemed) is the only change.
          const { loaded, refunded, redeemed, voided } = r.summary;
          const expected = before.balance + loaded + refunded - redeemed;
          if (voided === 0) c.expect('balance after sync (before + loaded + refunded - redeemed)', after.balance, expected);
          else
            c.check(
              after.balance >= expected,
              `balance after sync (${after.balance}) below the balance before (${before.balance}) + loaded + refunded - redeemed (${expected})`,
            );
          c.expect('offlineCount after sync', after.offlineCount, 0);
          c.expect('syncPending after sync', after.syncPending, false);
          Object.assign(c.details, { balance: after.balance, handedIn: before.offlineCount, loaded, refunded, redeemed, voided });
        });
      },
    );

    // ------------------------------------------------------------ order
    await cases.case(
      'commands-before-select',
      'with the applet not selected, DT commands answer 6986 (an unknown INS still 6D00); SELECT then works',
      async (c) => {
        await session(ctx, async (s) => {
          expectSw(c, 'SELECT of another AID (deselects)', await send(s, SELECT(hex('a000000003000000'))), SW.APP_NOT_FOUND);
          expectSw(c, 'GET STATUS', await send(s, GET_STATUS()), SW.COMMAND_NOT_ALLOWED);
          expectSw(c, 'PAY', await send(s, APDU(payCommand(hex('a0')))), SW.COMMAND_NOT_ALLOWED);
          expectSw(c, 'VERIFY PIN (no data)', await send(s, VERIFY_PIN_STATE()), SW.COMMAND_NOT_ALLOWED);
          expectSw(c, 'SYNC BEGIN', await send(s, APDU(syncBeginCommand(rnd(16)))), SW.COMMAND_NOT_ALLOWED);
          expectSw(c, 'unknown INS FE', await send(s, APDU({ ...getStatusCommand(), ins: UNKNOWN_INS })), SW.INS_NOT_SUPPORTED);
          await select(c, s);
          expectSw(c, 'GET STATUS after SELECT', await send(s, GET_STATUS()), SW.OK);
        });
      },
    );

    await cases.case('personalize-locked', 'every PERSONALIZE step on a personalized card answers 6986 and changes nothing', async (c) => {
      await session(ctx, async (s) => {
        const sel = await select(c, s);
        if (!sel.locked) c.skip('the card is not personalized: PERSONALIZE would change it');
        const before = await status(c, s);
        const pinv = wrongDigits(4, pin);
        const pukv = wrongDigits(8);
        declarePublic(enc(pinv));
        declarePublic(enc(pukv));
        const steps: [string, CommandApdu][] = [
          ['GENERATE KEY', generateKeyCommand()],
          ['WRITE CERTIFICATES', buildCommand(CardCommand.WRITE_CERTIFICATES, hex('a0'))],
          ['SET PIN', setPinCommand({ pin: enc(pinv), puk: enc(pukv) })],
          ['SET CONFIG', setConfigCommand({})],
          ['LOCK', lockCommand()],
        ];
        for (const [what, apdu] of steps) expectSw(c, `PERSONALIZE ${what}`, await send(s, encodeCommand(apdu)), SW.COMMAND_NOT_ALLOWED);
        expectSw(c, 'PERSONALIZE P1=05', await send(s, APDU({ ...generateKeyCommand(), p1: 0x05 })), SW.INCORRECT_P1P2);
        const after = await status(c, s);
        expectUnchanged(c, before, after);
        const sel2 = await select(c, s);
        c.expect('card key id unchanged', Buffer.from(sel2.card ?? []).toString('hex'), Buffer.from(sel.card ?? []).toString('hex'));
      });
    });

    // ------------------------------------------------------------ CLA / INS / P1P2
    await cases.case('wrong-cla', 'an unknown class byte answers 6E00; CLA 00 with a DT instruction answers 6D00', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        // GET STATUS with another class byte.
        expectSw(c, 'CLA A0', await send(s, APDU({ ...getStatusCommand(), cla: 0xa0 })), SW.CLA_NOT_SUPPORTED);
        expectSw(c, 'CLA 84', await send(s, APDU({ ...getStatusCommand(), cla: 0x84 })), SW.CLA_NOT_SUPPORTED);
        // (A class byte with bit 10 set would start a command chain (§9.4): answered 9000, not 6E00.)
        expectSw(c, 'CLA E0', await send(s, APDU({ ...getStatusCommand(), cla: 0xe0 })), SW.CLA_NOT_SUPPORTED);
        expectSw(c, 'CLA 00 INS 10', await send(s, APDU({ ...getStatusCommand(), cla: CLA.ISO })), SW.INS_NOT_SUPPORTED);
      });
    });

    await cases.case('unknown-ins', 'an unknown instruction answers 6D00 (also A4/C0 under CLA 80)', async (c) => {
      await session(ctx, async (s) => {
        await select(c, s);
        // Instructions the applet does not have (FE, 00, 14), and the two ISO ones under CLA 80.
        for (const ins of [UNKNOWN_INS, 0x00, 0x14, INS.SELECT, INS.GET_RESPONSE]) {
          expectSw(
            c,
            `CLA 80 INS ${ins.toString(16).padStart(2, '0')}`,
            await send(s, APDU({ ...getStatusCommand(), ins })),
            SW.INS_NOT_SUPPORTED,
          );
        }
        // ISO GET DATA (00 CA): not an instruction of the applet.
        expectSw(c, 'CLA 00 INS CA', await send(s, APDU({ ...getResponseCommand(256), ins: 0xca })), SW.INS_NOT_SUPPORTED);
      });
    });

    await cases.case('wrong-p1p2', 'a P1 or P2 not defined for the instruction answers 6A86', async (c) => {
      await session(ctx, async (s) => {
        const sel = await select(c, s);
        const probes: [string, Uint8Array][] = [
          ['GET STATUS P1=01', APDU({ ...getStatusCommand(), p1: 0x01 })],
          ['GET STATUS P2=01', APDU({ ...getStatusCommand(), p2: 0x01 })],
          ['GET CERTIFICATES P1=01', APDU({ ...getCertificatesCommand(), p1: 0x01 })],
          ['VERIFY PIN P1=01', APDU({ ...verifyPinCommand(), p1: 0x01 })],
          ['CHANGE PIN P2=80', APDU({ ...buildCommand(CardCommand.CHANGE_PIN), p2: 0x80 })],
          ['UNBLOCK PIN P1=01', APDU({ ...buildCommand(CardCommand.UNBLOCK_PIN), p1: 0x01 })],
          ['PAY P2=01', APDU({ ...buildCommand(CardCommand.PAY, undefined, 256), p2: 0x01 })],
          ['SYNC P1=03', APDU({ ...buildCommand(CardCommand.SYNC_BEGIN, undefined, 256), p1: 0x03 })],
          ['SYNC P2=01', APDU({ ...buildCommand(CardCommand.SYNC_BEGIN, undefined, 256), p2: 0x01 })],
          ['LOAD P1=00', APDU({ ...buildCommand(CardCommand.LOAD_BEGIN, undefined, 256), p1: 0x00 })],
        ];
        for (const [what, apdu] of probes) expectSw(c, what, await send(s, apdu), SW.INCORRECT_P1P2);
        c.details.locked = sel.locked;
      });
    });

    // ------------------------------------------------------------ malformed
    const malformed = async (c: CaseApi, probes: [string, Uint8Array][]): Promise<void> => {
      allowNonShort();
      const refused: string[] = [];
      for (const [what, apdu] of probes) {
        await session(ctx, async (s) => {
          await select(c, s);
          let a: Answer;
          try {
            a = await send(s, apdu);
          } catch (e) {
            // The reader stack would not carry it: the card cannot be tested through this reader.
            refused.push(`${what}: ${(e as Error).message}`);
            return;
          }
          expectSw(c, what, a, SW.WRONG_LENGTH);
          expectSw(c, `GET STATUS after ${what}`, await send(s, GET_STATUS()), SW.OK);
        });
      }
      if (refused.length) {
        c.details.refusedByReader = refused;
        if (refused.length === probes.length) c.skip(`the reader refused to transmit every probe (${refused[0]})`);
      }
    };

    // Only a 3-byte APDU: 1- and 2-byte APDUs make some PC/SC stacks hang (pcsc-lite with vpcd
    // never completes the transmit), which would take the reader away from the rest of the run.
    await cases.case('malformed-too-short', 'an APDU shorter than 4 bytes (3 bytes) answers 6700', async (c) => {
      await malformed(c, [['3-byte APDU 80 10 00', GET_STATUS().subarray(0, 3)]]);
    });

    await cases.case(
      'malformed-lc-mismatch',
      'Lc that disagrees with the APDU length (short data, trailing bytes) answers 6700',
      async (c) => {
        await malformed(c, [
          ['Lc 05 with 2 bytes', withHeader(CardCommand.GET_STATUS, '050102')],
          ['Lc 02 with 2 bytes, Le and a trailing byte', withHeader(CardCommand.GET_STATUS, '0201020000')],
        ]);
      },
    );

    await cases.case(
      'malformed-extended-length',
      'extended-length APDUs (not supported: short APDUs only, §9.1) answer 6700',
      async (c) => {
        await malformed(c, [
          ['extended Le', withHeader(CardCommand.GET_STATUS, '000000')],
          ['extended Lc', withHeader(CardCommand.PAY, '0001' + '00'.repeat(0x100))],
        ]);
      },
    );

    // ------------------------------------------------------------ the whole run so far
    await cases.case(
      'short-apdus-only',
      'every APDU the lab and the terminal kernel sent so far (outside the malformed cases) was a short APDU (data <= 255, answer <= 258 bytes)',
      async (c) => {
        const r = extras?.recorder;
        if (!r) c.skip('no recorder in this context');
        Object.assign(c.details, { ...r!.stats });
        c.expect('non-short commands', r!.stats.nonShort, 0);
        c.check(r!.stats.maxCommandData <= 255, `a command carried ${r!.stats.maxCommandData} data bytes`);
        c.check(r!.stats.maxResponse <= 258, `an answer was ${r!.stats.maxResponse} bytes`);
        c.check(r!.stats.commands > 0, 'no APDU was recorded');
      },
    );

    void selectInfo;
    return {};
  },
};
