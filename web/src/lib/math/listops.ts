/**
 * ListOps expressions as amlab.data.listops writes them ("[MAX 2 9 [MIN 4 7 ] 0 ]"): tokens,
 * the evaluation tree, the exact value, and where a malformed expression fails.
 */

export const OPS: Record<string, string> = { "[MAX": "max", "[MIN": "min", "[MED": "med", "[SM": "sum", "[PM": "prod" };

export interface Node {
  /** the operation's name, or null for a value */
  op: string | null;
  value: number;
  children: Node[];
  /** the token index of the node's first token (its operator, or the value) and its ']' */
  start: number;
  end: number;
}

export type Parsed =
  | { ok: true; tokens: string[]; tree: Node }
  | { ok: false; tokens: string[]; error: string; /** the token where it fails */ at: number };

/** The value of an operation on its evaluated arguments (amlab.data.listops.apply_op). */
export function applyOp(op: string, args: number[], modulus = 10): number {
  switch (op) {
    case "max":
      return Math.max(...args);
    case "min":
      return Math.min(...args);
    case "med": {
      const s = [...args].sort((a, b) => a - b);
      const mid = s.length >> 1;
      return s.length % 2 ? s[mid] : Math.floor((s[mid - 1] + s[mid]) / 2);
    }
    case "sum":
      return args.reduce((a, b) => a + b, 0) % modulus;
    case "prod":
      return args.reduce((a, b) => (a * b) % modulus, 1);
  }
  throw new Error(`unknown operation ${op}`);
}

/** Tokens (whitespace-separated), checked and evaluated; errors name the failing token. */
export function parse(text: string, modulus = 10): Parsed {
  const tokens = text.split(/\s+/).filter((t) => t.length > 0);
  const fail = (error: string, at: number): Parsed => ({ ok: false, tokens, error, at });
  if (tokens.length === 0) return fail("the expression is empty", 0);
  const stack: Node[] = [];
  let root: Node | null = null;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (root) return fail("text after the end of the expression", i);
    let node: Node;
    if (t in OPS) {
      stack.push({ op: OPS[t], value: NaN, children: [], start: i, end: -1 });
      continue;
    } else if (t === "]") {
      const open = stack.pop();
      if (!open) return fail("a ']' that closes nothing", i);
      if (open.children.length === 0) return fail("an operator without arguments", i);
      open.end = i;
      open.value = applyOp(open.op as string, open.children.map((c) => c.value), modulus);
      node = open;
    } else if (/^\d+$/.test(t) && Number(t) < modulus) {
      node = { op: null, value: Number(t), children: [], start: i, end: i };
    } else {
      return fail(`unknown token "${t}": an operator (${Object.keys(OPS).join(" ")}), ']' or a value 0..${modulus - 1}`, i);
    }
    if (stack.length) stack[stack.length - 1].children.push(node);
    else root = node;
  }
  if (!root) return fail("the expression is incomplete: a ']' is missing", tokens.length);
  return { ok: true, tokens, tree: root };
}

/** Nesting depth: operators on the longest root-to-value path. */
export function depth(node: Node): number {
  return node.op === null ? 0 : 1 + Math.max(...node.children.map(depth));
}

/** The operations used anywhere in the tree. */
export function opsUsed(node: Node, into = new Set<string>()): Set<string> {
  if (node.op !== null) {
    into.add(node.op);
    node.children.forEach((c) => opsUsed(c, into));
  }
  return into;
}

/** Token ids: the class token (1), the expression's tokens, padding (0) up to `length`. */
export function encode(tokens: string[], vocab: string[], length: number): number[] {
  const ids = [1, ...tokens.map((t) => vocab.indexOf(t))];
  if (ids.some((i) => i < 0)) throw new Error("a token outside the vocabulary");
  while (ids.length < length) ids.push(0);
  return ids;
}

export type Prompt =
  | { ok: true; tokens: string[]; /** the expression before '=', when it is complete */ tree: Node | null; equals: boolean }
  | { ok: false; tokens: string[]; error: string; at: number };

/** What a causal model may read: the start of an expression (even none of it), or a whole
 * expression, '=' and at most its value's token. Errors name the failing token. */
export function parsePrompt(text: string, modulus = 10): Prompt {
  const tokens = text.split(/\s+/).filter((t) => t.length > 0);
  const eq = tokens.indexOf("=");
  const before = eq < 0 ? tokens : tokens.slice(0, eq);
  const fail = (error: string, at: number): Prompt => ({ ok: false, tokens, error, at });
  if (before.length === 0 && eq < 0) return { ok: true, tokens, tree: null, equals: false };
  const p = parse(before.join(" "), modulus);
  if (!p.ok) {
    if (eq < 0 && p.at === before.length && before.length > 0) return { ok: true, tokens, tree: null, equals: false };
    return fail(eq >= 0 && p.at === before.length ? "'=' before the expression is complete" : p.error, p.at === before.length && eq >= 0 ? eq : p.at);
  }
  if (eq < 0) return { ok: true, tokens, tree: p.tree, equals: false };
  const after = tokens.slice(eq + 1);
  if (after.length > 1) return fail("only the value follows '='", eq + 2);
  if (after.length === 1 && !(/^\d+$/.test(after[0]) && Number(after[0]) < modulus)) return fail(`"${after[0]}" is not a value 0..${modulus - 1}`, eq + 1);
  return { ok: true, tokens, tree: p.tree, equals: true };
}
