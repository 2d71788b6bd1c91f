/**
 * What JSON.parse does not tell: the nesting depth of a JSON text and the
 * raw text of each top-level member (so that duplicate members and the exact
 * form of numbers, such as `1e3` or integers beyond 2^53, can be checked as
 * the spec requires). Used by envelope payloads and relay requests. No I/O.
 */

/**
 * Scans JSON text (already known to parse) for its nesting depth and the raw
 * text of each top-level member, so that duplicates and exact number forms
 * can be checked as the spec requires.
 */
export function scanTop(text: string): { depth: number; members: Map<string, string[]> } {
  let depth = 0;
  let max = 0;
  const members = new Map<string, string[]>();
  let i = 0;
  let key: string | null = null;
  let valueStart = -1;
  let expectKey = false;
  const n = text.length;
  const endValue = (end: number) => {
    if (key !== null && valueStart >= 0) {
      const list = members.get(key) ?? [];
      list.push(text.slice(valueStart, end).trim());
      members.set(key, list);
    }
    key = null;
    valueStart = -1;
  };
  while (i < n) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        key = JSON.parse(text.slice(i, j + 1)) as string;
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      depth++;
      max = Math.max(max, depth);
      if (depth === 1) expectKey = true;
    } else if (c === "}" || c === "]") {
      if (depth === 1) endValue(i);
      depth--;
    } else if (c === ":" && depth === 1) {
      valueStart = i + 1;
    } else if (c === "," && depth === 1) {
      endValue(i);
      expectKey = true;
    }
    i++;
  }
  return { depth: max, members };
}

/** Whether a raw JSON number text is an integer in 0 ..= 2^64 - 1 without fraction or exponent. */
export function isU64(raw: string): boolean {
  return /^(0|[1-9][0-9]*)$/.test(raw) && BigInt(raw) <= 0xffffffffffffffffn;
}

/**
 * The raw text of each element of a JSON array text (already known to
 * parse), so that each element can be scanned with {@link scanTop}.
 */
export function scanArray(text: string): string[] {
  const elements: string[] = [];
  let depth = 0;
  let start = -1;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      depth++;
      if (depth === 1) start = i + 1;
    } else if (c === "}" || c === "]") {
      if (depth === 1 && text.slice(start, i).trim() !== "") elements.push(text.slice(start, i).trim());
      depth--;
    } else if (c === "," && depth === 1) {
      elements.push(text.slice(start, i).trim());
      start = i + 1;
    }
    i++;
  }
  return elements;
}
