/**
 * Minimal types for the parts of `cose-js` (an independent COSE library,
 * devDependency) that the interoperability tests use. The package ships none.
 */
declare module 'cose-js' {
  interface CoseVerifier {
    key: { x: Buffer; y: Buffer; kid?: string };
    externalAAD?: Buffer;
  }
  const cose: {
    sign: {
      /** Verifies a COSE_Sign1 / COSE_Sign and returns its payload; throws on failure. */
      verifySync(message: Buffer, verifier: CoseVerifier, options?: { defaultType?: number }): Buffer;
    };
  };
  export default cose;
}
