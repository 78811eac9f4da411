/**
 * The fairness view's math against Python (`amlab export --vectors`, amlab.explain.fairness):
 * tokens and swaps as amlab.data.fairness's; each shipped classifier's ids and logits (float64
 * Python from the same float32 weights: tight; the float32 model's own forward: float32
 * tolerance) and its scores of the whole balanced test set; and, from Python's scores, the
 * point values of every group and individual metric of amlab.analysis.fairness at three
 * thresholds.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type Classifier,
  classifierFrom,
  counterfactualMetrics,
  counterfactuals,
  encode,
  familyMetrics,
  overallMetrics,
  scoreText,
  subgroupMetrics,
  swap,
  termMasks,
  words,
} from "./fairness";

const root = new URL("../../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("test-vectors/vectors.json", root), "utf8")).fairness;
const manifest = JSON.parse(readFileSync(new URL("public/data/manifest.json", root), "utf8")).fairness;
const data = JSON.parse(readFileSync(new URL(`public/data/${manifest.data}`, root), "utf8"));
const { texts, labels } = data.test as { texts: string[]; labels: number[] };

function load(name: string): Classifier {
  const info = manifest.models[name];
  const bytes = readFileSync(new URL(`public/data/${info.file}`, root));
  return classifierFrom(name, info, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** |a - b| <= atol + rtol |b|, and NaN (Python's None or NaN) only where Python has it. */
function close(what: string, a: number, b: number | null, rtol: number, atol: number) {
  if (b === null || Number.isNaN(b)) {
    if (!Number.isNaN(a)) throw new Error(`${what}: ${a}, expected NaN`);
    return;
  }
  if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) throw new Error(`${what}: ${a} vs ${b} (error ${Math.abs(a - b)})`);
}

describe("tokens and swaps", () => {
  it("words() splits and lower-cases as Python's, non-ASCII letters and empty text included", () => {
    for (const c of vectors.texts) expect(words(c.text), c.text).toEqual(c.words);
    expect(vectors.texts.some((c: { words: string[] }) => c.words.length === 0)).toBe(true);
  });
  it("swap() replaces whole words in any case, as Python's", () => {
    for (const c of vectors.swaps) expect(swap(c.args[0], c.args[1], c.args[2]), c.args.join(" | ")).toBe(c.result);
  });
  it("the shipped test set is balanced: every term in as many toxic as non-toxic texts", () => {
    const masks = termMasks(texts, Object.values(data.groups as Record<string, string[]>).flat());
    for (const [term, mask] of Object.entries(masks)) {
      const toxic = labels.filter((l, i) => mask[i] && l === 1).length;
      expect(toxic, term).toBe(labels.filter((l, i) => mask[i] && l === 0).length);
      expect(toxic, term).toBeGreaterThan(0);
    }
  });
});

describe.each(Object.keys(vectors.models))("classifier %s", (name) => {
  const want = vectors.models[name];
  const model = load(name);
  it("reads the texts as Python's encode and gives its logits", () => {
    vectors.texts.forEach((c: { text: string }, i: number) => {
      expect(encode(model, c.text).ids, c.text).toEqual(want.ids[i]);
      const got = scoreText(model, c.text);
      if (!got.ok) throw new Error(`${c.text}: ${got.error}`);
      close(`${c.text} (float64)`, got.logit, want.logits_float64[i], 1e-9, 1e-10);
      close(`${c.text} (float32 model)`, got.logit, want.logits_float32[i], 1e-5, 1e-5);
    });
  });
  it("scores the balanced test set as the float32 model does", () => {
    texts.forEach((t, i) => {
      const got = scoreText(model, t);
      if (!got.ok) throw new Error(got.error);
      close(t, got.score, want.test_scores[i], 0, 2e-6);
    });
  });
  it("computes Python's group and individual metrics at every threshold (from its scores)", () => {
    const scores: number[] = want.test_scores;
    const groups = data.groups as Record<string, string[]>;
    const masks = termMasks(texts, Object.values(groups).flat());
    const index = new Map(texts.map((t, i) => [t, i]));
    const swaps = counterfactuals(texts, groups);
    const swapped = swaps.map((s) => scores[index.get(s.text)!]);
    for (const m of want.metrics) {
      const t = m.threshold;
      const rows = Object.fromEntries(Object.entries(masks).map(([term, mask]) => [term, subgroupMetrics(labels, scores, mask, t)]));
      expect(Object.keys(rows).sort()).toEqual(Object.keys(m.subgroups).sort());
      for (const [term, row] of Object.entries(rows)) {
        for (const [k, v] of Object.entries(m.subgroups[term])) close(`${t} ${term} ${k}`, row[k as keyof typeof row], v as number, 1e-12, 1e-12);
      }
      for (const [family, members] of Object.entries(vectors.families as Record<string, string[]>)) {
        const got = familyMetrics(members.map((term) => rows[term]));
        for (const [k, v] of Object.entries(m.families[family])) {
          if (k === "four_fifths") expect(got.four_fifths, `${t} ${family}`).toBe(v);
          else close(`${t} ${family} ${k}`, got[k as keyof typeof got] as number, v as number, 1e-12, 1e-12);
        }
      }
      const overall = overallMetrics(labels, scores, t);
      for (const [k, v] of Object.entries(m.overall)) close(`${t} overall ${k}`, overall[k as keyof typeof overall], v as number, 1e-12, 1e-12);
      const individual = counterfactualMetrics(swaps, swaps.map((s) => scores[s.source]), swapped, t);
      for (const [group, row] of Object.entries(m.individual as Record<string, Record<string, number>>)) {
        const got = group === "all" ? individual.all : individual.groups[group];
        for (const [k, v] of Object.entries(row)) close(`${t} ${group} ${k}`, got[k as keyof typeof got], v, 1e-12, 1e-12);
      }
    }
  });
});

describe("bad input", () => {
  it("unknown words are named, read as <unk>; a text too long for the transformer is refused", () => {
    const model = load("transformer");
    const got = scoreText(model, "zorblax people are zorblax and kind");
    expect(got.unknown).toEqual(["zorblax"]);
    const long = scoreText(model, Array(40).fill("people").join(" "));
    expect(long.ok).toBe(false);
    expect(scoreText(load("bow"), Array(40).fill("people").join(" ")).ok).toBe(true);
    const empty = scoreText(model, "");
    expect(empty.ok && Number.isFinite(empty.score)).toBe(true);
  });
});
