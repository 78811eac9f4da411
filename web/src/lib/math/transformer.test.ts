/**
 * The ListOps transformer's forward pass against amlab.explain.listops.trace (`amlab export
 * --vectors`): every intermediate, with and without ablation, from the shipped weights; the
 * logits also against the float32 model's own forward (fused attention) at float32
 * tolerance. And the ListOps parser against amlab.data.listops.evaluate.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { encode, parse, parsePrompt } from "./listops";
import {
  type Ablation,
  type TransformerWeights,
  drawIndex,
  erf,
  forward,
  headAsMemory,
  samplingDistribution,
  unpackTensors,
} from "./transformer";

const root = new URL("../../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("test-vectors/vectors.json", root), "utf8"));
const manifest = JSON.parse(readFileSync(new URL("public/data/manifest.json", root), "utf8"));

interface Stored {
  shape: number[];
  data: (number | null)[];
}

function weightsOf(name: string): TransformerWeights {
  const info = manifest.listops.models[name];
  const bytes = readFileSync(new URL(`public/data/${info.file}`, root));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return { config: info.config, tensors: unpackTensors(buffer, info.tensors) };
}

/** |a - b| <= atol + rtol |b| entrywise; null (Python's -inf) must be -Infinity. */
function close(what: string, a: ArrayLike<number>, b: Stored | number[], rtol: number, atol: number) {
  const want = Array.isArray(b) ? b : b.data;
  expect(a.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    if (w === null) {
      if (a[i] !== -Infinity) throw new Error(`${what}[${i}]: ${a[i]}, expected -inf`);
      continue;
    }
    const err = Math.abs(a[i] - w);
    if (!(err <= atol + rtol * Math.abs(w))) throw new Error(`${what}[${i}]: ${a[i]} vs ${w} (error ${err})`);
  }
}

const BLOCK_FIELDS: [string, string][] = [
  ["ln1", "ln1"],
  ["q", "q"],
  ["k", "k"],
  ["v", "v"],
  ["scores", "scores"],
  ["weights", "weights"],
  ["heads", "heads"],
  ["mixed", "mixed"],
  ["attnOut", "attn_out"],
  ["mid", "mid"],
  ["ln2", "ln2"],
  ["mlpPre", "mlp_pre"],
  ["mlpPost", "mlp_post"],
  ["mlpOut", "mlp_out"],
  ["out", "out"],
  ["lensLogits", "lens_logits"],
];

describe("ListOps transformer forward pass", () => {
  const models: Record<string, TransformerWeights> = {};
  for (const [n, c] of vectors.listops.entries()) {
    const ablation: Ablation = { attention: c.ablation.attention, mlp: c.ablation.mlp, headsOff: c.ablation.heads_off };
    it(`case ${n}: ${c.model} ${c.expression} ${JSON.stringify(c.ablation)}: every intermediate`, () => {
      models[c.model] ??= weightsOf(c.model);
      const got = forward(models[c.model], c.tokens, ablation);
      const want = c.trace;
      // float64 on both sides from the same float32 weights: only the order of sums differs
      const [rtol, atol] = [1e-9, 1e-11];
      close("embed", got.embed, want.embed, rtol, atol);
      close("position", got.position, want.position, rtol, atol);
      close("x", got.x, want.x, rtol, atol);
      expect(got.blocks.length).toBe(want.blocks.length);
      got.blocks.forEach((block, b) => {
        for (const [ts, py] of BLOCK_FIELDS) {
          close(`block ${b} ${ts}`, block[ts as keyof typeof block], want.blocks[b][py], rtol, atol);
        }
      });
      close("final", got.final, want.final, rtol, atol);
      close("logits", got.logits, want.logits, rtol, atol);
      close("probs", got.probs, want.probs, rtol, atol);
      // the float32 model itself (PyTorch's fused attention), to float32 tolerance
      close("logits vs float32 forward", got.logits, c.logits_float32.flat(), 1e-4, 1e-4);
    });
  }

  it("ablation changes the answer's distribution (the cases are not all alike)", () => {
    const [plain, noAttention] = vectors.listops.slice(0, 2);
    const w = weightsOf(plain.model);
    const a = forward(w, plain.tokens).probs;
    const b = forward(w, noAttention.tokens, { attention: false, mlp: true, headsOff: [] }).probs;
    expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeGreaterThan(1e-3);
  });

  it("a padded sequence predicts as the unpadded one", () => {
    const c = vectors.listops[0];
    const w = weightsOf(c.model);
    const tight = c.tokens.filter((t: number) => t !== 0);
    close("probs", forward(w, tight).probs, Array.from(forward(w, c.tokens).probs), 1e-12, 1e-14);
  });

  it("refuses a sequence longer than max_len", () => {
    const w = weightsOf("joint");
    expect(() => forward(w, new Array(w.config.max_len + 1).fill(4))).toThrow(/max_len|takes/);
  });
});

describe("one head as one associative-memory update", () => {
  for (const name of ["joint", "causal"]) {
    it(`${name}: uses the head's attention weights and never raises the energy (CCCP)`, () => {
      const w = weightsOf(name);
      const c = vectors.listops.find((v: { model: string }) => v.model === name);
      const t = forward(w, c.tokens);
      const { heads, dim } = w.config;
      const hd = dim / heads;
      let checked = 0;
      t.blocks.forEach((block) => {
        for (let h = 0; h < heads; h++) {
          const keys = block.k.slice(h * t.n * hd, (h + 1) * t.n * hd);
          for (let i = 0; i < t.n; i++) {
            const keep = c.tokens.map((id: number, j: number) => id !== 0 && (name !== "causal" || j <= i));
            const q = block.q.subarray((h * t.n + i) * hd, (h * t.n + i + 1) * hd);
            const m = headAsMemory(q, keys, keep, 1 / Math.sqrt(hd));
            const row = block.weights.subarray((h * t.n + i) * t.n, (h * t.n + i + 1) * t.n);
            close("weights", m.weights, Array.from(row), 1e-12, 1e-15);
            expect(m.nextEnergy).toBeLessThanOrEqual(m.energy + 1e-12);
            checked++;
          }
        }
      });
      expect(checked).toBe(w.config.layers * heads * t.n);
    });
  }
});

describe("erf (GELU's)", () => {
  it("equals Python's math.erf", () => {
    close("erf", vectors.erf.x.map(erf), vectors.erf.erf, 1e-14, 1e-15);
  });
});

/** Each text fails at the token given, with the error matched. */
function expectFailures(
  read: (text: string) => { ok: true } | { ok: false; at: number; error: string },
  cases: [string, number, RegExp][],
) {
  for (const [text, at, error] of cases) {
    const p = read(text);
    expect(p.ok, text).toBe(false);
    if (!p.ok) {
      expect(p.at, text).toBe(at);
      expect(p.error, text).toMatch(error);
    }
  }
}

describe("ListOps parser", () => {
  it("evaluates the held-out expressions as amlab.data.listops.evaluate does", () => {
    for (const info of Object.values(manifest.listops.models) as { examples: [string, number][] }[]) {
      expect(info.examples.length).toBeGreaterThan(100);
      for (const [expression, value] of info.examples) {
        const p = parse(expression);
        if (!p.ok) throw new Error(`${expression}: ${p.error}`);
        expect(p.tree.value, expression).toBe(value);
      }
    }
  });

  it("marks where a malformed expression fails", () => {
    const cases: [string, number, RegExp][] = [
      ["[MAX 3 4", 3, /missing/],
      ["[MAX 3 4 ] ]", 4, /after the end/],
      ["[MAX 3 x ]", 2, /unknown token "x"/],
      ["[MAX 12 ]", 1, /unknown token "12"/],
      ["[MAX ]", 1, /without arguments/],
      ["] 3", 0, /closes nothing/],
      ["", 0, /empty/],
    ];
    expectFailures(parse, cases);
  });

  it("encodes with the model's vocabulary, the class token first", () => {
    const p = parse("[SM 1 [MED 2 3 ] ]");
    if (!p.ok) throw new Error(p.error);
    expect(p.tree.value).toBe((1 + 2) % 10);
    const vocab = manifest.listops.models.joint.vocab;
    const ids = encode(p.tokens, vocab, 10);
    expect(ids.map((i) => vocab[i])).toEqual(
      ["<cls>", "[SM", "1", "[MED", "2", "3", "]", "]", "<pad>", "<pad>"],
    );
  });
});

describe("causal prompts", () => {
  it("accept a start of an expression, or an expression, '=' and a value", () => {
    for (const text of ["", "[MAX", "[MAX 3 [MED 4", "[MAX 3 4 ]", "[MAX 3 4 ] =", "[MAX 3 4 ] = 4", "[MAX 3 4 ] = 7"]) {
      expect(parsePrompt(text).ok, text).toBe(true);
    }
    const p = parsePrompt("[SM 7 [MAX 1 6 ] 4 ] =");
    expect(p.ok && p.equals && p.tree?.value).toBe(7);
  });

  it("mark where a prompt fails", () => {
    const cases: [string, number, RegExp][] = [
      ["[MAX 3 x", 2, /unknown token "x"/],
      ["[MAX 3 =", 2, /before the expression is complete/],
      ["[MAX 3 ] = 3 4", 5, /only the value/],
      ["[MAX 3 ] = ]", 4, /not a value/],
      ["[MAX 3 ] ]", 3, /after the end/],
    ];
    expectFailures(parsePrompt, cases);
  });
});

describe("sampling", () => {
  it("draws from the distribution amlab.explain.listops.sampling_distribution gives", () => {
    for (const c of vectors.sampling) {
      const got = samplingDistribution(c.logits, { temperature: c.temperature, topK: c.top_k, topP: c.top_p });
      close(`T=${c.temperature} k=${c.top_k} p=${c.top_p}`, got, c.distribution, 1e-12, 1e-15);
    }
  });

  it("draws index i for u in [P(<i), P(<=i)), skipping tokens cut off", () => {
    const p = [0, 0.5, 0, 0.3, 0.2];
    expect([0, 0.49, 0.5, 0.79, 0.8, 0.999].map((u) => drawIndex(p, u))).toEqual([1, 1, 3, 3, 4, 4]);
  });
});
