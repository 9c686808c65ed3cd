/**
 * `@dt/hardware-tests`: the DT lab. Suites (conformance, robustness, timing,
 * endurance) run against a card in a reader through a recorded
 * {@link LabContext}; results form a {@link LabRun} rendered as JUnit XML,
 * JSON and HTML; every APDU goes into a transcript that `dt-lab replay`
 * turns into a regression test. CLI: `dt-lab` (src/cli.ts).
 *
 * @module
 */
export * from './model.ts';
export type { CardControl, CardControlStatus, CaseApi, CaseRunner, LabContext, LabOptions, LabSuite, LabTerminal } from './suite.ts';
export {
  createLabContext,
  labExtras,
  matchReader,
  readJournalCrl,
  fetchCrl,
  LabConfigError,
  LabUnreachableError,
  DEFAULT_LAB_OPTIONS,
  PAYMENT_SUITES,
  type ContextOptions,
  type LabContextHandle,
  type LabExtras,
} from './context.ts';
export { Recorder, isLooseCommand, shortDataLength, safeName, type ApduStats, type RecorderOptions } from './recorder.ts';
export {
  formatTranscript,
  parseTranscript,
  readTranscript,
  maskSecrets,
  unmask,
  carriesPin,
  TranscriptError,
  TRANSCRIPT_MAGIC,
  MAX_APDU,
  MAX_LINE,
  MAX_EXCHANGES,
  MAX_FILE,
  MASK_PIN,
  MASK_UNKNOWN,
  type Exchange,
  type ParsedExchange,
  type Transcript,
  type TranscriptHeader,
} from './transcript.ts';
export {
  runSuites,
  probeCard,
  streamProgress,
  silentProgress,
  exitCodeOf,
  checkSuiteNames,
  errorMessage,
  TOOL_VERSION,
  type ProgressSink,
  type RunOptions,
} from './runner.ts';
export {
  replayTranscript,
  replayAll,
  compareAnswer,
  collectTranscripts,
  stateFileTarget,
  readerTarget,
  type Mismatch,
  type ReplayResult,
  type ReplayTarget,
  type TranscriptFile,
  type ReplayOptions,
} from './replay.ts';
export { SUITES, suitesByName } from './suites/index.ts';
export { writeReports, type ReportPaths } from './reports/index.ts';
export { main, buildProgram, ExitCode, EXIT_CODES } from './cli.ts';
