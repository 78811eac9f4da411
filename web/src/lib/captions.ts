/**
 * Text prompts as amlab.data.captions reads them ("a thick slanted 7"): lower-cased, split at
 * white space (Python's str.split: its white space, not JavaScript's \s), every word one of the
 * vocabulary, token ids the words' indices. The words come from the manifest (`amlab export`),
 * never written here.
 */

/** The words a prompt may use, as amlab.explain.diffusion_onnx.prompt_words exports them. */
export interface PromptWords {
  vocabulary: string[];
  /** attribute -> its words for the lowest and the highest tercile */
  attribute_words: Record<string, [string, string]>;
  class_words: string[];
}

/** What a prompt asks for (amlab.data.captions.Request): the digit it names (null: none) and
 * each attribute's tercile, 0 (low), 1 (middle: no word) or 2 (high). */
export interface Request {
  digit: number | null;
  levels: Record<string, number>;
}

export type Prompt =
  /** refused: `unknown` the words the vocabulary lacks, each once, in the order they first
   * appear; else the prompt names two digits or both words of an attribute, which
   * amlab.data.captions.request refuses; `problem` says which, for the reader */
  | { ok: false; unknown: string[]; problem: string }
  /** the words, their token ids (tokenize) and what the prompt asks for (request) */
  | { ok: true; words: string[]; ids: number[]; request: Request };

/** The characters Python's str.split() splits at (str.isspace): JavaScript's \s lacks
 * U+001C..U+001F and U+0085, and has U+FEFF, which Python's lacks. */
const PYTHON_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

/** The words of a prompt: lower-cased, split at white space. */
export function promptWords(prompt: string): string[] {
  return prompt.toLowerCase().split(PYTHON_SPACE).filter((w) => w.length > 0);
}

/** A prompt read as amlab.data.captions reads it: refused (unknown words named, or a request
 * that asks for two things at once), or its token ids (tokenize) and what it asks for
 * (request). */
export function parsePrompt(prompt: string, words: PromptWords): Prompt {
  const found = promptWords(prompt);
  const unknown = [...new Set(found.filter((w) => !words.vocabulary.includes(w)))];
  if (unknown.length) {
    const names = unknown.map((w) => JSON.stringify(w)).join(", ");
    const problem = `the model does not know ${names}; its words are ${words.vocabulary.join(" ")}`;
    return { ok: false, unknown, problem };
  }
  const digits = [...new Set(found.filter((w) => words.class_words.includes(w)))];
  if (digits.length > 1) return { ok: false, unknown, problem: `it names more than one digit (${digits.join(", ")})` };
  const levels: Record<string, number> = {};
  for (const [name, [low, high]] of Object.entries(words.attribute_words)) {
    if (found.includes(low) && found.includes(high)) return { ok: false, unknown, problem: `it says both "${low}" and "${high}"; pick one` };
    levels[name] = found.includes(low) ? 0 : found.includes(high) ? 2 : 1;
  }
  const ids = found.map((w) => words.vocabulary.indexOf(w));
  return { ok: true, words: found, ids, request: { digit: digits.length ? Number(digits[0]) : null, levels } };
}

/** Whether two requests ask for the same digit and the same terciles. */
export function sameRequest(a: Request, b: Request): boolean {
  return a.digit === b.digit && Object.keys(a.levels).every((k) => a.levels[k] === b.levels[k]);
}
