/**
 * Escaping for the reports. Everything in a report may come from a card or
 * a reader (names, ATRs, messages with card answers), so every piece of
 * text goes through these functions; nothing is trusted to be markup-free.
 *
 * @module
 */

/**
 * Removes the characters XML 1.0 forbids (C0 controls other than tab, LF
 * and CR; U+FFFE/U+FFFF; lone surrogates). An XML parser must refuse a
 * document that contains them, even escaped as character references, so
 * they are dropped rather than escaped.
 */
export function stripXmlInvalid(s: string): string {
  return s.replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    '',
  );
}

/** Escapes text content and attribute values for XML and HTML (both quotes too); strips invalid characters. */
export function escapeText(value: unknown): string {
  return stripXmlInvalid(String(value ?? ''))
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** Like {@link escapeText}, and keeps line breaks and tabs in attribute values (a parser would normalize them to spaces). */
export function escapeAttr(value: unknown): string {
  return escapeText(value).replace(/\n/g, '&#10;').replace(/\r/g, '&#13;').replace(/\t/g, '&#9;');
}

/**
 * JSON for an inline `<script type="application/json">` block: `<`, `>`
 * and `&` become \u escapes (so `</script>` or `<!--` in card data cannot end
 * or confuse the block), as do U+2028/U+2029. `JSON.parse` reads it back
 * unchanged.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}
