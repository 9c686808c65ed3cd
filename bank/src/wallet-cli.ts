/**
 * `dt-wallet`: the cardholder's (or a bank branch's) command for one DT card,
 * a card in a PC/SC reader (`--reader pcsc[:<name>]`) or a simulated card's
 * state file (`--card <file>`, run here by the real firmware): status, load
 * (a bank's load order through the ledger), sync, unload (value back to the
 * bank, the card empty), change PIN, unblock with the PUK. It talks to the
 * ledger with the terminal's card-sync client (`CardSyncClient`).
 *
 * A refused command leaves the card as it was: what can be checked before the
 * card is touched is checked first (the order names this card and amount, the
 * ledger knows the card and has not revoked it, the ledger accepted the order).
 *
 * Exit codes: {@link EXIT_CODES}.
 *
 * @module
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import {
  CardStatusError,
  WrongPinError,
  changePin,
  decodeDeterministic,
  decodeStruct,
  fromHex,
  MarkSchema,
  formatTenge,
  getStatus,
  openSigned,
  syncBegin,
  syncComplete,
  toHex,
  unblockPin,
  verifyPin,
  SYNC_CHALLENGE_LENGTH,
  type CardStatus,
  exitCodesByName,
  exitCodesHelp,
  USAGE_EXIT_MEANING,
} from '@dt/protocol';
import { randomBytes } from 'node:crypto';
import { StateFileError } from '@dt/card-applet-sim';
import { CardSyncClient, summarizeReceipt, type LedgerRefusal } from '@dt/terminal';
import { openLoadOrder, signLoadOrder } from '@dt/ledger';
import {
  CliFailure,
  UsageError,
  describeMark,
  failureMessage,
  isNetworkError,
  isReaderError,
  ledgerRequest,
  nowSec,
  output,
  parseTenge,
  readBank,
  readCose,
  readSecrets,
  secretOptions,
  withCard,
  NEW_PIN,
  PIN,
  PUK,
  type CardSpec,
  type OpenCard,
  ledgerUrlOption,
} from './common.ts';
import { dirname, join, resolve } from 'node:path';

/** The exit codes of `dt-wallet`, the one table (`--help` prints it; the root README repeats it). */
export const EXIT_CODES = [
  { code: 0, name: 'OK', meaning: 'success' },
  {
    code: 1,
    name: 'REFUSED',
    meaning: 'refused: the card said no (wrong PIN or PUK, blocked) or the ledger did (its code is printed); the card is unchanged',
  },
  { code: 2, name: 'USAGE', meaning: USAGE_EXIT_MEANING },
  {
    code: 3,
    name: 'UNREACHABLE',
    meaning: 'unreachable: the ledger of --ledger cannot be reached (the card is unchanged unless a sync was begun: run sync again)',
  },
  {
    code: 4,
    name: 'NO_CARD',
    meaning: 'no card: none in the reader in time, not a DT card, the reader busy, or the card state file invalid or in use',
  },
  { code: 6, name: 'INTERNAL', meaning: 'internal error, or a ledger answer that is not the API' },
] as const;

/** Exit codes of `dt-wallet` by name. */
export const ExitCode = exitCodesByName(EXIT_CODES);

const EXIT_HELP = `
${exitCodesHelp(EXIT_CODES)}

Amounts are typed in tenge with up to two decimals (150, 150.50) and shown as tenge
with two decimals (150.50 KZT); --json output gives integer tiyn (1 KZT = 100 tiyn).
The card: --card <state file> (a simulated card) or --reader pcsc[:<reader name>].`;

interface Common extends CardSpec {
  json?: boolean;
}

const intIn = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
  return n;
};

function cardCommand(c: Command): Command {
  return c
    .option('--card <file>', 'a simulated card: its state file, run here by the real firmware')
    .option('--reader <spec>', 'a card in a PC/SC reader: pcsc (the first reader) or pcsc:<reader name part>')
    .option('--wait <seconds>', 'how long to wait for the card in the reader', intIn('--wait', 1, 3600), 10)
    .option('--json', 'machine-readable JSON output (amounts in integer tiyn)');
}

/** What `status` reports. */
function describe(s: CardStatus) {
  const l = s.limits;
  return {
    card: s.card ? toHex(s.card) : null,
    locked: s.locked,
    balance: s.balance,
    coins: s.coins,
    counter: s.counter,
    syncPending: s.syncPending,
    offline: { count: s.offlineCount, value: s.offlineValue },
    limits: l ?? null,
    offlineLeft: l ? { value: Math.max(0, l.offlineTotal - s.offlineValue), count: Math.max(0, l.offlineCount - s.offlineCount) } : null,
    pinTries: s.pinTries,
    pukTries: s.pukTries,
  };
}

function refused(r: LedgerRefusal): CliFailure {
  return new CliFailure(
    r.status >= 500 || r.code === 'BAD_RESPONSE' || r.code === 'TOO_LARGE' ? ExitCode.INTERNAL : ExitCode.REFUSED,
    r.code,
    `the ledger refused: ${(r.message ?? r.code).replace(/^[A-Z_]+: /, '')}${r.detail ? ` (${r.detail})` : ''}`,
  );
}

/** The card's kid, or a refusal when the card is not personalized. */
async function cardKid(c: OpenCard): Promise<{ kid: string; status: CardStatus }> {
  const status = await getStatus(c.transport);
  if (!status.card || !status.locked)
    throw new CliFailure(ExitCode.REFUSED, 'NOT_PERSONALIZED', 'the card is not personalized (dt-bank issue)');
  return { kid: toHex(status.card), status };
}

/** What the ledger says about the card, checked before the card is touched: registered, and (unless `revokedOk`) not revoked. */
async function ledgerCard(ledger: string, kid: string, revokedOk: boolean): Promise<{ revokedIn: number | null; pendingLoads: number }> {
  const r = await ledgerRequest(ledger, 'GET', `/v1/cards/${kid}`);
  if (r.status !== 200) {
    const code = typeof r.json.code === 'string' ? r.json.code : `HTTP_${r.status}`;
    throw new CliFailure(
      r.status >= 500 ? ExitCode.INTERNAL : ExitCode.REFUSED,
      code,
      `the ledger refused: ${String(r.json.message ?? code).replace(/^[A-Z_]+: /, '')}`,
    );
  }
  const j = r.json as { revokedIn: number | null; pendingLoads: number; blockedAt: number | null };
  if (!revokedOk && j.revokedIn !== null)
    throw new CliFailure(
      ExitCode.REFUSED,
      'CARD_REVOKED',
      `the card is revoked${j.blockedAt !== null ? ' (blocked by its bank)' : ''}: it gets no fresh value; dt-wallet unload returns what it holds to its bank`,
    );
  return j;
}

/** One mark class of the ledger's card answer (`byMark`, SPEC §7.6.1). */
interface MarkClass {
  readonly mark: string | null;
  readonly synced: number;
  readonly pendingLoads: number;
}

/** The status lines of the ledger's holdings per mark class: what the card got at its last sync, and loads waiting. */
function markLines(byMark: unknown): string[] {
  if (!Array.isArray(byMark) || byMark.length === 0) return [];
  const label = (hex: string | null): string => {
    if (hex === null) return 'unmarked';
    try {
      return `marked (${describeMark(decodeStruct(MarkSchema, decodeDeterministic(fromHex(hex), 1024)))})`;
    } catch {
      return `marked ${hex}`;
    }
  };
  return [
    'by mark        at the last sync (offline payments since spend from these), and loads waiting:',
    ...(byMark as MarkClass[]).map((c) => `  ${label(c.mark)}: ${formatTenge(c.synced)} synced, ${formatTenge(c.pendingLoads)} waiting`),
  ];
}

/** Builds the `dt-wallet` program. */
export function buildProgram(): Command {
  const program = new Command('dt-wallet')
    .description(
      "one DT card, in a PC/SC reader or a simulated card file: balance and limits, load through the bank's load order, sync with the ledger, unload to the bank, change or unblock the PIN",
    )
    .showHelpAfterError()
    .exitOverride()
    .addHelpText('after', EXIT_HELP);

  cardCommand(
    program
      .command('status')
      .description(
        'what the card holds (balance, coins), its offline payments since the last sync and the offline limits left, sync pending, PIN tries; with --ledger also what the ledger says (revoked or blocked, loads and merchant refunds waiting, and per mark class what the card got at its last sync and the loads waiting)',
      )
      .option('--ledger <url>', 'also ask the ledger about the card', ledgerUrlOption),
  ).action(async (o: Common & { ledger?: string }) => {
    const s = describe(await withCard(o, (c) => getStatus(c.transport)));
    let atLedger: Record<string, unknown> | undefined;
    if (o.ledger !== undefined && s.card) {
      const r = await ledgerRequest(o.ledger, 'GET', `/v1/cards/${s.card}`);
      atLedger = r.status === 200 ? r.json : { code: r.json.code ?? `HTTP_${r.status}` };
    }
    const lines = [
      `card           ${s.card ?? '(not personalized)'}${s.locked ? '' : ' (personalization open)'}`,
      `balance        ${formatTenge(s.balance)} in ${s.coins} coin(s)`,
      `offline        ${formatTenge(s.offline.value)} in ${s.offline.count} payment(s) since the last sync`,
      ...(s.offlineLeft && s.limits
        ? [
            `offline left   ${formatTenge(s.offlineLeft.value)} in ${s.offlineLeft.count} payment(s); per payment ${formatTenge(s.limits.perPayment)}, PIN above ${formatTenge(s.limits.cvmLimit)}`,
          ]
        : []),
      `sync pending   ${s.syncPending ? 'yes: the card refuses payments until dt-wallet sync' : 'no'}`,
      `PIN tries      ${s.pinTries} left${s.pinTries === 0 ? ' (BLOCKED: dt-wallet unblock)' : ''}, PUK tries ${s.pukTries} left`,
      ...(atLedger
        ? [
            `at the ledger  ${
              'code' in atLedger
                ? String(atLedger.code)
                : `${atLedger.revokedIn !== null ? `REVOKED (list v${String(atLedger.revokedIn)})${atLedger.blockedAt !== null ? ', blocked by its bank' : ''}` : 'valid'}; loads waiting ${formatTenge(Number(atLedger.pendingLoads))}, refunds waiting ${formatTenge(Number(atLedger.pendingRefunds ?? 0))}`
            }`,
            ...markLines(atLedger.byMark),
          ]
        : []),
    ];
    output(!!o.json, { ...s, ...(atLedger ? { ledger: atLedger } : {}) }, lines.join('\n'));
  });

  cardCommand(
    program
      .command('load')
      .description(
        "top the card up online: the bank's signed load order (--order, from dt-bank load-order; or --bank-key at a branch, which signs it here) goes to the ledger, then LOAD delivers the value; checked before the card is touched: the order names this card and amount, the ledger knows the card and accepted the order",
      )
      .argument('<tenge>', 'amount, e.g. 500 or 150.50')
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption)
      .option('--order <file>', "the bank's signed load order (dt-bank load-order)")
      .option('--bank-key <file>', 'a branch: sign the order with this bank key (banks/<name>.key.json; certificates next to it)'),
  ).action(async (amountText: string, o: Common & { ledger: string; order?: string; bankKey?: string }) => {
    const amount = parseTenge(amountText);
    if ((o.order === undefined) === (o.bankKey === undefined))
      throw new UsageError('give the load order: --order <file> or --bank-key <file>');
    const fileOrder = o.order !== undefined ? readCose(o.order, '--order') : undefined;
    let opened: ReturnType<typeof openLoadOrder> | undefined;
    if (fileOrder) {
      try {
        opened = openLoadOrder(fileOrder);
      } catch (e) {
        throw new UsageError(`--order ${o.order}: not a load order (${(e as Error).message})`);
      }
      if (opened.order.amount !== amount)
        throw new CliFailure(
          ExitCode.REFUSED,
          'AMOUNT_MISMATCH',
          `the order is for ${formatTenge(opened.order.amount)}, not ${formatTenge(amount)}`,
        );
    }
    const bank =
      o.bankKey !== undefined
        ? readBank(
            {
              bankKey: o.bankKey,
              root: join(dirname(dirname(resolve(o.bankKey))), 'root.cert'),
              ledgerCert: join(dirname(dirname(resolve(o.bankKey))), 'ledger.cert'),
            },
            ExitCode.USAGE,
            nowSec(),
          )
        : undefined;
    const client = new CardSyncClient({ ledgerUrl: o.ledger });
    const r = await withCard(o, async (c) => {
      const { kid, status } = await cardKid(c);
      if (opened && toHex(opened.order.card) !== kid)
        throw new CliFailure(ExitCode.REFUSED, 'CARD_MISMATCH', `the order is for card ${toHex(opened.order.card)}, not this card ${kid}`);
      await ledgerCard(o.ledger, kid, false);
      const order =
        fileOrder ??
        signLoadOrder({ card: status.card!, amount, id: new Uint8Array(randomBytes(16)), time: nowSec() } as never, bank!.signer);
      const a = await client.submitLoadOrder(order);
      if (!a.ok) throw refused(a);
      if (a.state !== 'pending')
        throw new CliFailure(
          ExitCode.REFUSED,
          'ALREADY_DELIVERED',
          `the ledger delivered load ${a.id} already (${a.state}); nothing to load`,
        );
      const l = await client.load(c.transport);
      if (!l.ok) throw refused(l);
      return { kid, order: a, summary: l.summary, balance: (await getStatus(c.transport)).balance };
    });
    output(
      !!o.json,
      { card: r.kid, load: r.order.id, loaded: r.summary.loaded, voided: r.summary.voided, balance: r.balance },
      `loaded ${formatTenge(r.summary.loaded)} onto card ${r.kid} (load ${r.order.id}); balance ${formatTenge(r.balance)}`,
    );
  });

  cardCommand(
    program
      .command('sync')
      .description(
        "hand the card's offline payments to the ledger and take fresh tokens for the rest (and any loads waiting, voided payments and merchant refunds); a card the ledger revoked is refused before it is touched (dt-wallet unload)",
      )
      .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption),
  ).action(async (o: Common & { ledger: string }) => {
    const client = new CardSyncClient({ ledgerUrl: o.ledger });
    const r = await withCard(o, async (c) => {
      const { kid, status } = await cardKid(c);
      await ledgerCard(o.ledger, kid, false);
      const s = await client.sync(c.transport);
      if (!s.ok) throw refused(s);
      return { kid, handed: status.offlineCount, summary: s.summary, balance: (await getStatus(c.transport)).balance };
    });
    output(
      !!o.json,
      {
        card: r.kid,
        payments: r.handed,
        loaded: r.summary.loaded,
        voided: r.summary.voided,
        refunded: r.summary.refunded,
        tokens: r.summary.tokens,
        balance: r.balance,
      },
      `synced card ${r.kid}: ${r.handed} offline payment(s) handed in, ${formatTenge(r.summary.loaded)} loaded, ${r.summary.voided} voided payment(s) back, ${formatTenge(r.summary.refunded)} refunded by merchants; balance ${formatTenge(r.balance)} in ${r.summary.tokens} token(s)`,
    );
  });

  cardCommand(
    secretOptions(
      program
        .command('unload')
        .description(
          "return everything the card holds to its issuing bank (a defund, SPEC §7.6.3: the ledger records the offline payments as a sync would, credits the rest to the bank, which pays it into the holder's account, and signs a receipt that empties the card); needs the PIN; also the way a revoked card gives its value back",
        )
        .requiredOption('--ledger <url>', 'ledger base URL', ledgerUrlOption),
      [PIN],
    ),
  ).action(async (o: Common & { ledger: string }) => {
    const [pin] = readSecrets(o as unknown as Record<string, unknown>, [PIN]) as [string];
    const client = new CardSyncClient({ ledgerUrl: o.ledger });
    const r = await withCard(o, async (c) => {
      const { kid, status } = await cardKid(c);
      await ledgerCard(o.ledger, kid, true);
      await verifyPin(c.transport, pin);
      const request = await syncBegin(c.transport, new Uint8Array(randomBytes(SYNC_CHALLENGE_LENGTH)));
      const answer = await defund(client, o.ledger, request);
      if (!answer.ok) throw refused(answer);
      await syncComplete(c.transport, answer.receipt);
      const summary = summarizeReceipt(answer.receipt);
      return {
        kid,
        before: status.balance,
        summary,
        after: (await getStatus(c.transport)).balance,
        time: openSigned('SyncReceipt', answer.receipt).message.time,
        receipt: answer.receipt,
      };
    });
    output(
      !!o.json,
      {
        card: r.kid,
        redeemed: r.summary.redeemed,
        voided: r.summary.voided,
        refunded: r.summary.refunded,
        balance: r.after,
        receipt: toHex(r.receipt),
      },
      `unloaded card ${r.kid}: ${formatTenge(r.summary.redeemed)} returned to its bank (the ledger's signed receipt is in --json); balance ${formatTenge(r.after)}`,
    );
  });

  cardCommand(
    secretOptions(program.command('change-pin').description('change the PIN (the card checks the current one: a wrong one costs a try)'), [
      PIN,
      NEW_PIN,
    ]),
  ).action(async (o: Common) => {
    const [pin, newPin] = readSecrets(o as unknown as Record<string, unknown>, [PIN, NEW_PIN]) as [string, string];
    await withCard(o, (c) => changePin(c.transport, pin, newPin));
    output(!!o.json, { changed: true }, 'PIN changed');
  });

  cardCommand(
    secretOptions(program.command('unblock').description('unblock the PIN with the unblock code (PUK) and set a new PIN'), [PUK, NEW_PIN]),
  ).action(async (o: Common) => {
    const [puk, newPin] = readSecrets(o as unknown as Record<string, unknown>, [PUK, NEW_PIN]) as [string, string];
    await withCard(o, (c) => unblockPin(c.transport, puk, newPin));
    output(!!o.json, { unblocked: true }, 'PIN unblocked and set');
  });

  return program;
}

/** `POST /v1/defund` with the card's SyncRequest: the ledger's receipt, or its refusal. */
async function defund(
  client: CardSyncClient,
  ledger: string,
  request: Uint8Array,
): Promise<{ ok: true; receipt: Uint8Array } | LedgerRefusal> {
  void client;
  const res = await fetch(new URL('/v1/defund', ledger), {
    method: 'POST',
    headers: { 'content-type': 'application/cbor' },
    body: Buffer.from(request),
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.length > 256 * 1024) return { ok: false, status: res.status, code: 'TOO_LARGE' };
  if (res.status === 200) return { ok: true, receipt: bytes };
  let j: { code?: unknown; message?: unknown; detail?: unknown } = {};
  try {
    j = JSON.parse(Buffer.from(bytes).toString('utf8')) as typeof j;
  } catch {
    // not JSON
  }
  return {
    ok: false,
    status: res.status,
    code: typeof j.code === 'string' ? j.code : `HTTP_${res.status}`,
    ...(typeof j.message === 'string' ? { message: j.message } : {}),
    ...(typeof j.detail === 'string' ? { detail: j.detail } : {}),
  };
}

/** The exit code of an error a command threw. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
  if (e instanceof UsageError) return ExitCode.USAGE;
  if (e instanceof CliFailure) return e.exitCode;
  if (e instanceof StateFileError) return e.code === 'STATE_MISSING' ? ExitCode.USAGE : ExitCode.NO_CARD;
  if (e instanceof CardStatusError) return e.sw === 0x6a82 ? ExitCode.NO_CARD : ExitCode.REFUSED;
  if (isReaderError(e)) return ExitCode.NO_CARD;
  if (isNetworkError(e)) return ExitCode.UNREACHABLE;
  return ExitCode.INTERNAL;
}

function errorCode(e: unknown): string {
  if (e instanceof CliFailure) return e.code;
  if (e instanceof UsageError) return 'USAGE';
  if (e instanceof WrongPinError) return 'WRONG_PIN';
  if (e instanceof StateFileError) return e.code;
  if (e instanceof CardStatusError) return e.sw === 0x6983 ? 'BLOCKED' : 'CARD_REFUSED';
  // In the order of exitCodeOf: a reader's timeout is the reader's, not the ledger's.
  if (isReaderError(e)) return 'NO_CARD';
  if (isNetworkError(e)) return 'UNREACHABLE';
  return 'INTERNAL';
}

/** Runs the CLI with `argv` (process.argv form). */
export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    const code = exitCodeOf(e);
    if (!(e instanceof CommanderError)) {
      const ec = errorCode(e);
      const message = e instanceof WrongPinError ? `wrong PIN or PUK: ${e.remaining} tries left` : failureMessage(e);
      if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: ec, message }) + '\n');
      process.stderr.write(`dt-wallet: ${ec === 'USAGE' ? '' : `${ec}: `}${message}\n`);
    }
    process.exitCode = code;
  }
}
