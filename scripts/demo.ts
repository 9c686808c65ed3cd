/**
 * Protocol walkthrough (`npm run walkthrough`): one payment through the raw
 * protocol calls, without devices or servers. Every step runs the real
 * protocol code: keys are generated, certificates issued and verified, a
 * transfer signed by the card and checked by the terminal, and the signed transfer is printed in CBOR
 * diagnostic notation.
 *
 * Usage: npm run walkthrough [-- --json] [-- --amount N]
 */
import { webcrypto } from 'node:crypto';
import {
  BankPermission,
  CURRENCY_KZT,
  Cvm,
  Role,
  decodeDeterministic,
  generateKeyPair,
  issueCertificate,
  keyId,
  keyPairSigner,
  outputId,
  payloadHash,
  signMessage,
  sumAmounts,
  toDiagnostic,
  toHex,
  verifyChain,
  verifyRoot,
  verifySigned,
  GENESIS_PREV,
  DtError,
  type KeyPair,
} from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';

const HELP = `npm run walkthrough -- [options]

Runs the DT protocol walkthrough with freshly generated keys:
issuer root, ledger, bank, card and terminal certificates; a ledger-signed
token for the card; a terminal payment request; the card's signed transfer;
the terminal's offline checks; the transfer in CBOR diagnostic notation.

Options:
  --amount N   amount to pay in tiyn (default 2500, at most 10000)
  --json       print one JSON document instead of the human walkthrough
  --help       show this help
`;

function parseArgs(argv: string[]): { amount: number; json: boolean } {
  let amount = 2500;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else if (a === '--json') json = true;
    else if (a === '--amount') {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 1 || v > 10_000) fail('--amount must be an integer from 1 to 10000');
      amount = v;
    } else fail(`unknown option ${a} (see --help)`);
  }
  return { amount, json };
}

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(2);
}

const random = (n: number) => webcrypto.getRandomValues(new Uint8Array(n));

function main(): void {
  const { amount, json } = parseArgs(process.argv.slice(2));
  const steps: { step: string; detail: string }[] = [];
  const say = (step: string, detail: string) => {
    steps.push({ step, detail });
    if (!json) process.stdout.write(`• ${step}\n    ${detail}\n`);
  };
  const now = Math.floor(Date.now() / 1000);
  const year = 365 * 24 * 3600;
  const kid = (k: KeyPair) => toHex(keyId(k.publicKey));

  // 1. PKI: the issuer root certifies a ledger and a bank; the bank a card and a terminal.
  const issuer = generateKeyPair(random);
  const ledger = generateKeyPair(random);
  const bank = generateKeyPair(random);
  const card = generateKeyPair(random);
  const terminal = generateKeyPair(random);
  const base = { nbf: now - 60, iat: now, exp: now + year, v: 1 as const };
  const rootCert = issueCertificate(
    { ...base, iss: 'NBK issuer', sub: 'NBK issuer', role: Role.ISSUER, publicKey: issuer.publicKey },
    keyPairSigner(issuer),
  );
  const ledgerCert = issueCertificate(
    { ...base, iss: 'NBK issuer', sub: 'DT ledger', role: Role.LEDGER, publicKey: ledger.publicKey },
    keyPairSigner(issuer),
  );
  const bankCert = issueCertificate(
    {
      ...base,
      iss: 'NBK issuer',
      sub: 'Demo Bank',
      role: Role.BANK,
      perms: BankPermission.ISSUING | BankPermission.ACQUIRING,
      publicKey: bank.publicKey,
    },
    keyPairSigner(issuer),
  );
  const limits = { perPayment: 10_000, offlineTotal: 50_000, offlineCount: 10, cvmLimit: 5_000 };
  const cardCert = issueCertificate(
    { ...base, iss: 'Demo Bank', sub: 'card 0001', role: Role.CARD, limits, currency: CURRENCY_KZT, publicKey: card.publicKey },
    keyPairSigner(bank),
  );
  const merchant = { id: 'KZ-ALM-000123', mcc: 5411, name: 'Corner Grocery' };
  const terminalCert = issueCertificate(
    { ...base, iss: 'Demo Bank', sub: 'POS 7', role: Role.TERMINAL, merchant, publicKey: terminal.publicKey },
    keyPairSigner(bank),
  );
  const cardKid = keyId(card.publicKey);
  const terminalKid = keyId(terminal.publicKey);
  say('PKI issued', `issuer ${kid(issuer)}, ledger ${kid(ledger)}, bank ${kid(bank)}, card ${kid(card)}, terminal ${kid(terminal)}`);

  // 2. The ledger signs a token owned by the card (what a load delivers).
  const serial = random(16);
  const tokenBytes = signMessage(
    'Token',
    { serial, value: 10_000, currency: CURRENCY_KZT, owner: cardKid, issued: now },
    keyPairSigner(ledger),
  );
  say('Token signed by the ledger', `serial ${toHex(serial)}, 10000 tiyn, owner ${kid(card)} (${tokenBytes.length} bytes)`);

  // 3. The terminal signs a payment request with a fresh CSPRNG nonce.
  const nonce = random(16);
  const requestBytes = signMessage(
    'PaymentRequest',
    {
      amount,
      currency: CURRENCY_KZT,
      terminal: terminalKid,
      merchant: merchant.id,
      mcc: merchant.mcc,
      nonce,
      time: now,
      chain: [terminalCert, bankCert],
    },
    keyPairSigner(terminal),
  );
  say('Payment request signed by the terminal', `${amount} tiyn to ${merchant.name}, nonce ${toHex(nonce)} (${requestBytes.length} bytes)`);

  // 4. The card checks the terminal's chain and signature, then signs a transfer.
  const root = verifyRoot(rootCert, now, keyId(issuer.publicKey));
  const termChain = verifyChain([terminalCert, bankCert], { root, at: now, leafRole: Role.TERMINAL });
  const request = verifySigned('PaymentRequest', requestBytes, termChain[0]!.publicKey).message;
  const change = 10_000 - request.amount;
  const outputs = [{ value: request.amount, owner: request.terminal }, ...(change > 0 ? [{ value: change, owner: cardKid }] : [])];
  const transferBytes = signMessage(
    'Transfer',
    {
      card: cardKid,
      counter: 1,
      prev: GENESIS_PREV,
      inputs: [serial],
      outputs,
      amount: request.amount,
      currency: request.currency,
      payee: request.terminal,
      merchant: request.merchant,
      mcc: request.mcc,
      nonce: request.nonce,
      time: request.time,
      cvm: request.amount > limits.cvmLimit ? Cvm.OFFLINE_PIN : Cvm.NONE,
    },
    keyPairSigner(card),
  );
  say('Card verified the terminal and signed the transfer', `counter 1, ${outputs.length} outputs (${transferBytes.length} bytes)`);

  // 5. The terminal checks the card offline, with the native (OpenSSL) verifier.
  const cardChain = verifyChain([cardCert, bankCert], { root, at: now, leafRole: Role.CARD, verifier: nativeVerifier });
  const ledgerKey = verifyChain([ledgerCert], { root, at: now, leafRole: Role.LEDGER, verifier: nativeVerifier })[0]!.publicKey;
  const token = verifySigned('Token', tokenBytes, ledgerKey, nativeVerifier).message;
  const opened = verifySigned('Transfer', transferBytes, cardChain[0]!.publicKey, nativeVerifier);
  const t = opened.message;
  const ok =
    toHex(token.owner) === kid(card) &&
    sumAmounts(t.outputs.map((o) => o.value)) === token.value &&
    t.outputs[0]!.value === amount &&
    toHex(t.payee) === kid(terminal) &&
    toHex(t.nonce) === toHex(nonce);
  if (!ok) throw new Error('terminal checks failed');
  const transferHash = payloadHash(opened.cose);
  say(
    'Terminal verified the handover offline',
    `chain to the pinned root, token, signature, value ${token.value} = ${t.outputs.map((o) => o.value).join(' + ')}; transfer hash ${toHex(transferHash)}`,
  );
  say('Output ids', `payee ${toHex(outputId(transferHash, 0))}` + (change > 0 ? `, change ${toHex(outputId(transferHash, 1))}` : ''));

  // 6. A tampered copy must fail verification.
  const tampered = transferBytes.slice();
  tampered[tampered.length - 70] = tampered[tampered.length - 70]! ^ 0x01;
  let rejected = '';
  try {
    verifySigned('Transfer', tampered, cardChain[0]!.publicKey, nativeVerifier);
  } catch (e) {
    rejected = e instanceof DtError ? e.code : String(e);
  }
  if (!rejected) throw new Error('tampered transfer was accepted');
  say('A tampered transfer is rejected', `error code ${rejected}`);

  const diagnostic = toDiagnostic(decodeDeterministic(transferBytes, transferBytes.length), { expand: true, indent: 2 });
  if (json) {
    process.stdout.write(
      JSON.stringify({ steps, transfer: { hex: toHex(transferBytes), hash: toHex(transferHash), diagnostic } }, null, 2) + '\n',
    );
  } else {
    process.stdout.write(`\nThe signed transfer (COSE_Sign1, CBOR diagnostic notation):\n${diagnostic}\n`);
  }
}

try {
  main();
} catch (e) {
  fail(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
}
