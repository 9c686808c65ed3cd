/**
 * An integrator's TypeScript on the installed packages' `.d.ts` (test/pack.test.ts compiles it
 * in the temporary folder with the repo's tsc, without the dt-source condition). The
 * `@ts-expect-error` lines fail the compile if the types were missing (`any`) or wrong.
 */
import { decodeMessage, type Transfer } from '@dt/protocol';
import { nativeVerifier } from '@dt/protocol/native';
import { Journal, parsePolicy, type RiskPolicy } from '@dt/terminal';

const policy: RiskPolicy = parsePolicy({ floorLimit: 100 });
// @ts-expect-error the floor limit is a number
export const floor: string = policy.floorLimit;
const transfer: Transfer = decodeMessage('Transfer', new Uint8Array(0));
// @ts-expect-error a Transfer has no tip
export const tip = transfer.tip;
export const verified: boolean = nativeVerifier.verify(new Uint8Array(64), new Uint8Array(0), new Uint8Array(65));
export const open: (path: string) => Journal = (path) => Journal.open(path);
