/**
 * Constant tables of the DT card's command set (SPEC §9.2, §10): the applet
 * and protocol versions, the capability and personalization bits, PIN and
 * PUK lengths, and CLA/INS/P1/P2 of every command as one const table.
 *
 * The code points themselves (CLA, INS, the P1 tables and the status words)
 * stay in `../apdu/constants.ts`: the APDU layer below needs them too (GET
 * RESPONSE and SELECT in the codec and the exchange, INS in status errors),
 * and it must not import from this layer, which builds on it. This file says
 * which code points make up each command.
 *
 * @module
 */
import { CLA, INS, PERSONALIZE_P1, SELECT_P1P2, SYNC_P1 } from '../apdu/constants.ts';

/** Version of the applet (SelectResponse `applet`, key 1). */
export const APPLET_VERSION = 1;
/** Version of the DT protocol the applet speaks (SelectResponse `protocol`, key 2). */
export const PROTOCOL_VERSION = 1;

/** Capability bits announced by SELECT (SelectResponse `capabilities`, key 3; SPEC §10.4). */
export const Capability = {
  /** PAY: offline payment. */
  PAY: 0x01,
  /** SYNC BEGIN/COMPLETE. */
  SYNC: 0x02,
  /** LOAD BEGIN/COMPLETE. */
  LOAD: 0x04,
  /** Offline PIN (VERIFY, CHANGE, UNBLOCK PIN). */
  OFFLINE_PIN: 0x08,
  /** The device asks its holder to confirm every payment (screen and button). */
  ON_DEVICE_CONFIRM: 0x10,
  /** Purpose-bound (marked) tokens. */
  MARKS: 0x20,
  /** Torn-tap retry (PaymentRequest.retryOf). */
  RETRY: 0x40,
} as const;

/** Personalization progress bits (CardStatus `personalized`, key 15; SPEC §10.4). */
export const Personalized = {
  /** GENERATE KEY done: the card holds its key pair. */
  KEY: 0x01,
  /** WRITE CERTIFICATES done. */
  CERTIFICATES: 0x02,
  /** SET PIN done. */
  PIN: 0x04,
  /** SET CONFIG done. */
  CONFIG: 0x08,
} as const;

/** Every {@link Personalized} bit: key, certificates, PIN and configuration written. */
export const FULLY_PERSONALIZED = Personalized.KEY | Personalized.CERTIFICATES | Personalized.PIN | Personalized.CONFIG;

/** Smallest and largest PIN (ASCII digits, SPEC §10.6). */
export const PIN_LENGTH = { min: 4, max: 12 } as const;
/** Smallest and largest unblock code (ASCII digits, SPEC §10.6). */
export const PUK_LENGTH = { min: 8, max: 16 } as const;
/** PIN tries of a card whose SetPin gives none (SPEC §10.4). */
export const DEFAULT_PIN_TRIES = 3;
/** Unblock code tries of a card whose SetPin gives none (SPEC §10.4). */
export const DEFAULT_PUK_TRIES = 10;

/** Length of the host's challenge in SYNC BEGIN and LOAD BEGIN (SPEC §9.2). */
export const SYNC_CHALLENGE_LENGTH = 16;
/** Bound on structured command data and on the format answers when decoded (SPEC §10.1). */
export const FORMAT_MAX_SIZE = 8192;
/** Bound on the WriteCertificates data when decoded (SPEC §10.1). */
export const WRITE_CERTIFICATES_MAX_SIZE = 16 * 1024;

/** Class, instruction and parameter bytes of one command. */
export interface CommandHeader {
  /** Class byte (without the chaining bit). */
  readonly cla: number;
  /** Instruction byte. */
  readonly ins: number;
  /** Parameter 1. */
  readonly p1: number;
  /** Parameter 2. */
  readonly p2: number;
}

/**
 * CLA, INS, P1 and P2 of every command of the DT applet, as SPEC §9.2 lists
 * them. The builders of `commands.ts` take their headers from here, and
 * {@link identifyCommand} reads commands back against it.
 */
export const CardCommand = {
  /** SELECT the applet by AID (00 A4 04 00). */
  SELECT: { cla: CLA.ISO, ins: INS.SELECT, p1: SELECT_P1P2.P1_BY_NAME, p2: SELECT_P1P2.P2_FIRST },
  /** GET RESPONSE (00 C0 00 00): the next piece of a long answer. */
  GET_RESPONSE: { cla: CLA.ISO, ins: INS.GET_RESPONSE, p1: 0x00, p2: 0x00 },
  /** GET STATUS (80 10 00 00). */
  GET_STATUS: { cla: CLA.PROPRIETARY, ins: INS.GET_STATUS, p1: 0x00, p2: 0x00 },
  /** GET CERTIFICATES (80 12 00 00). */
  GET_CERTIFICATES: { cla: CLA.PROPRIETARY, ins: INS.GET_CERTIFICATES, p1: 0x00, p2: 0x00 },
  /** VERIFY PIN (80 20 00 00). */
  VERIFY_PIN: { cla: CLA.PROPRIETARY, ins: INS.VERIFY_PIN, p1: 0x00, p2: 0x00 },
  /** CHANGE PIN (80 24 00 00). */
  CHANGE_PIN: { cla: CLA.PROPRIETARY, ins: INS.CHANGE_PIN, p1: 0x00, p2: 0x00 },
  /** UNBLOCK PIN (80 2C 00 00). */
  UNBLOCK_PIN: { cla: CLA.PROPRIETARY, ins: INS.UNBLOCK_PIN, p1: 0x00, p2: 0x00 },
  /** PAY (80 30 00 00). */
  PAY: { cla: CLA.PROPRIETARY, ins: INS.PAY, p1: 0x00, p2: 0x00 },
  /** PERSONALIZE, generate key (80 40 01 00). */
  GENERATE_KEY: { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.GENERATE_KEY, p2: 0x00 },
  /** PERSONALIZE, write certificates (80 40 02 00). */
  WRITE_CERTIFICATES: { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.WRITE_CERTIFICATES, p2: 0x00 },
  /** PERSONALIZE, set PIN (80 40 03 00). */
  SET_PIN: { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.SET_PIN, p2: 0x00 },
  /** PERSONALIZE, set config (80 40 04 00). */
  SET_CONFIG: { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.SET_CONFIG, p2: 0x00 },
  /** PERSONALIZE, lock (80 40 0F 00). */
  LOCK: { cla: CLA.PROPRIETARY, ins: INS.PERSONALIZE, p1: PERSONALIZE_P1.LOCK, p2: 0x00 },
  /** LOAD, begin (80 50 01 00). */
  LOAD_BEGIN: { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.BEGIN, p2: 0x00 },
  /** LOAD, complete (80 50 02 00). */
  LOAD_COMPLETE: { cla: CLA.PROPRIETARY, ins: INS.LOAD, p1: SYNC_P1.COMPLETE, p2: 0x00 },
  /** SYNC, begin (80 52 01 00). */
  SYNC_BEGIN: { cla: CLA.PROPRIETARY, ins: INS.SYNC, p1: SYNC_P1.BEGIN, p2: 0x00 },
  /** SYNC, complete (80 52 02 00). */
  SYNC_COMPLETE: { cla: CLA.PROPRIETARY, ins: INS.SYNC, p1: SYNC_P1.COMPLETE, p2: 0x00 },
} as const satisfies Record<string, CommandHeader>;

/** The name of a command of {@link CardCommand}. */
export type CardCommandName = keyof typeof CardCommand;

/** Instructions whose P1 selects a step (PERSONALIZE, LOAD, SYNC): P1 is part of what the command is. */
export const STEP_INS: ReadonlySet<number> = new Set([INS.PERSONALIZE, INS.LOAD, INS.SYNC]);

/** Commands whose data field carries a PIN or an unblock code: transcripts and logs mask it. */
export const SECRET_COMMANDS: ReadonlySet<CardCommandName> = new Set<CardCommandName>([
  'VERIFY_PIN',
  'CHANGE_PIN',
  'UNBLOCK_PIN',
  'SET_PIN',
]);

/**
 * Commands whose answer is signed or random by nature (a fresh signature or
 * key pair), so that the same card in the same state answers them with other
 * bytes when it signs with fresh randomness: PAY, SYNC and LOAD BEGIN,
 * GENERATE KEY.
 */
export const FRESH_ANSWER_COMMANDS: ReadonlySet<CardCommandName> = new Set<CardCommandName>([
  'PAY',
  'SYNC_BEGIN',
  'LOAD_BEGIN',
  'GENERATE_KEY',
]);
