/**
 * Fairness of text classifiers, in the browser: the shipped classifiers of amlab.explain.fairness
 * scoring text, counterfactual swaps, and the point values of the group and individual metrics
 * of amlab.analysis.fairness at any threshold. Tested against Python (vitest, vectors from
 * `amlab export`).
 *
 * - Tokens as amlab.data.fairness.words: runs of [a-z0-9'] in the lower-cased text; ids as
 *   encode: <cls> (2) first, a word the model does not know as <unk> (1).
 * - The bag of words (BagOfWordsClassifier): logit = bias + sum of the words' weights.
 * - The transformer (TextTransformer): the ListOps transformer's forward of transformer.ts
 *   (the same pre-norm blocks; keys that are padding are masked there, and an unpadded
 *   sequence has none), read out at <cls> by a head with one logit.
 * - Group metrics per subgroup (the texts that mention a term; toxic = label 1, flagged =
 *   score >= threshold): positive rate, FPR, FNR, TPR, subgroup/BPSN/BNSP AUC, the average
 *   equality gaps; over a family
 *   of subgroups: demographic parity and equalized odds differences and ratios, FPR and FNR
 *   differences, the four-fifths rule (fairlearn's between-groups semantics, as Python's).
 * - Individual metrics over counterfactual pairs (a text and the text with one term swapped
 *   for another of its group): the counterfactual token fairness gap mean |f(x) - f(x')| and
 *   the flip rate at the threshold.
 */
import { forward, type TransformerWeights, unpackTensors } from "./transformer";

/** {group: tokens}: terms that may be swapped for one another */
export type TokenGroups = Record<string, string[]>;

const WORD = /[a-z0-9']+/g;
/** the special ids (amlab.data.fairness's vocabulary; 0 is padding, which a page never feeds) */
export const UNKNOWN = 1;
export const CLS = 2;

/** The tokens of a text: runs of letters, digits and apostrophes, lower-cased. */
export function words(text: string): string[] {
  return text.toLowerCase().match(WORD) ?? [];
}

/** text with every occurrence of the word `token` (any case, whole words) replaced by `other`. */
export function swap(text: string, token: string, other: string): string {
  const escaped = token.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return text.replace(new RegExp(`(?<![a-z0-9'])${escaped}(?![a-z0-9'])`, "giu"), () => other);
}

// -- the classifiers --------------------------------------------------------------------------
export interface Classifier {
  name: string;
  kind: "BagOfWordsClassifier" | "TextTransformer";
  vocabulary: string[];
  index: Map<string, number>;
  /** the most tokens it reads, <cls> included (Infinity: any) */
  maxLen: number;
  /** the logit of a sequence of ids, <cls> first, no padding */
  logit: (ids: number[]) => number;
}

export const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** The bag-of-words logistic regression: weight (V,) and bias (1,) of its state_dict. */
export function bagOfWords(name: string, vocabulary: string[], tensors: Record<string, Float32Array>): Classifier {
  const weight = tensors.weight;
  const bias = tensors.bias;
  if (!weight || !bias || weight.length !== vocabulary.length) throw new Error(`${name}: not a bag-of-words model's weights`);
  return {
    name,
    kind: "BagOfWordsClassifier",
    vocabulary,
    index: new Map(vocabulary.map((w, i) => [w, i])),
    maxLen: Infinity,
    logit: (ids) => ids.reduce((s, id) => s + weight[id], bias[0]),
  };
}

export interface TextTransformerConfig {
  dim: number;
  layers: number;
  heads: number;
  mlp_ratio: number;
  max_len: number;
}

/** The text transformer: its state_dict, run by the ListOps transformer's forward (whose
 * token table is `embed.weight`; the text model calls it `embed_tokens.weight`). */
export function textTransformer(
  name: string,
  vocabulary: string[],
  config: TextTransformerConfig,
  tensors: Record<string, Float32Array>,
): Classifier {
  const weights: TransformerWeights = {
    config: { ...config, vocab_size: vocabulary.length, classes: 1, share_weights: false, causal: false },
    tensors: { ...tensors, "embed.weight": tensors["embed_tokens.weight"] },
  };
  return {
    name,
    kind: "TextTransformer",
    vocabulary,
    index: new Map(vocabulary.map((w, i) => [w, i])),
    maxLen: config.max_len,
    logit: (ids) => forward(weights, ids).logits[0],
  };
}

/** One shipped classifier's entry in manifest.json (amlab.explain.fairness.export_fairness). */
export interface FairnessModelInfo {
  file: string;
  kind: Classifier["kind"];
  /** the transformer's sizes (the bag of words has none) */
  config: Partial<TextTransformerConfig>;
  vocabulary: string[];
  tensors: { name: string; shape: number[]; offset: number }[];
  /** `amlab fairness train`'s record of the run */
  training: { model: string; spec: Record<string, unknown>; parameters: number; training_texts: number; training_accuracy: number; seconds: number };
}

/** A shipped classifier from its manifest entry and its weights file's bytes. */
export function classifierFrom(name: string, info: FairnessModelInfo, buffer: ArrayBuffer): Classifier {
  const tensors = unpackTensors(buffer, info.tensors);
  if (info.kind === "BagOfWordsClassifier") return bagOfWords(name, info.vocabulary, tensors);
  if (info.kind === "TextTransformer") return textTransformer(name, info.vocabulary, info.config as TextTransformerConfig, tensors);
  throw new Error(`${name}: unknown classifier kind ${info.kind}`);
}

export interface Encoded {
  words: string[];
  /** <cls> first, unknown words as <unk> */
  ids: number[];
  /** the words the model does not know (read as <unk>), each once */
  unknown: string[];
}

export function encode(c: Classifier, text: string): Encoded {
  const ws = words(text);
  const ids = [CLS, ...ws.map((w) => c.index.get(w) ?? UNKNOWN)];
  // the specials' names are not words a text can hold: [a-z0-9'] has no < or >
  const unknown = [...new Set(ws.filter((w) => !c.index.has(w)))];
  return { words: ws, ids, unknown };
}

export type Scored = { ok: true; logit: number; score: number; unknown: string[] } | { ok: false; error: string; unknown: string[] };

/** The probability that `text` is toxic, or why the model cannot read it (too long). */
export function scoreText(c: Classifier, text: string): Scored {
  const e = encode(c, text);
  if (e.ids.length > c.maxLen) {
    return { ok: false, error: `${e.words.length} words; ${c.name} reads at most ${c.maxLen - 1}`, unknown: e.unknown };
  }
  const logit = c.logit(e.ids);
  return { ok: true, logit, score: sigmoid(logit), unknown: e.unknown };
}

// -- group metrics ------------------------------------------------------------------------------
/** {token: whether text i mentions it}, for each of `tokens`. */
export function termMasks(texts: string[], tokens: string[]): Record<string, boolean[]> {
  const sets = texts.map((t) => new Set(words(t)));
  return Object.fromEntries(tokens.map((token) => [token, sets.map((s) => s.has(token))]));
}

/** hits / among, NaN where nothing is among */
function rate(hits: number, among: number): number {
  return among > 0 ? hits / among : NaN;
}

/** The probability that a `positive` row scores above a `negative` one (ties count 1/2):
 * the ROC AUC; NaN where either side is empty. Disjoint masks. */
export function auc(scores: ArrayLike<number>, positive: boolean[], negative: boolean[]): number {
  const rows: number[] = [];
  for (let i = 0; i < positive.length; i++) if (positive[i] || negative[i]) rows.push(i);
  rows.sort((a, b) => scores[a] - scores[b]);
  let wins = 0;
  let negBelow = 0;
  let pos = 0;
  for (let start = 0; start < rows.length; ) {
    let end = start;
    while (end < rows.length && scores[rows[end]] === scores[rows[start]]) end++;
    let p = 0;
    let n = 0;
    for (let j = start; j < end; j++) positive[rows[j]] ? p++ : n++;
    wins += p * (negBelow + 0.5 * n);
    negBelow += n;
    pos += p;
    start = end;
  }
  return rate(wins, pos * negBelow);
}

export interface SubgroupMetrics {
  count: number;
  toxic: number;
  non_toxic: number;
  positive_rate: number;
  fpr: number;
  fnr: number;
  tpr: number;
  subgroup_auc: number;
  bpsn_auc: number;
  bnsp_auc: number;
  /** 1/2 - P(a toxic subgroup text scores above a toxic background one): negative where the
   * subgroup's toxic texts score higher */
  positive_aeg: number;
  /** the same over the non-toxic texts */
  negative_aeg: number;
}

/** The metrics of the subgroup `mask` of labelled, scored texts at `threshold`. */
export function subgroupMetrics(labels: number[], scores: ArrayLike<number>, mask: boolean[], threshold: number): SubgroupMetrics {
  let count = 0, toxic = 0, flagged = 0, falsePos = 0, truePos = 0;
  for (let i = 0; i < labels.length; i++) {
    if (!mask[i]) continue;
    const f = scores[i] >= threshold;
    count++;
    if (f) flagged++;
    if (labels[i] === 1) {
      toxic++;
      if (f) truePos++;
    } else if (f) falsePos++;
  }
  const nonToxic = count - toxic;
  const y = labels.map((l) => l === 1);
  const inSubgroup = (want: boolean, toxicWanted: boolean) => y.map((t, i) => mask[i] === want && t === toxicWanted);
  return {
    count,
    toxic,
    non_toxic: nonToxic,
    positive_rate: rate(flagged, count),
    fpr: rate(falsePos, nonToxic),
    fnr: rate(toxic - truePos, toxic),
    tpr: rate(truePos, toxic),
    subgroup_auc: auc(scores, inSubgroup(true, true), inSubgroup(true, false)),
    bpsn_auc: auc(scores, inSubgroup(false, true), inSubgroup(true, false)),
    bnsp_auc: auc(scores, inSubgroup(true, true), inSubgroup(false, false)),
    positive_aeg: 0.5 - auc(scores, inSubgroup(true, true), inSubgroup(false, true)),
    negative_aeg: 0.5 - auc(scores, inSubgroup(true, false), inSubgroup(false, false)),
  };
}

export const FAMILY_METRICS = [
  "demographic_parity_difference",
  "demographic_parity_ratio",
  "equalized_odds_difference",
  "equalized_odds_ratio",
  "fpr_difference",
  "fnr_difference",
] as const;
export type FamilyMetrics = Record<(typeof FAMILY_METRICS)[number], number> & { four_fifths: boolean };
export const FOUR_FIFTHS = 0.8;

/** (max - min, min / max) of the finite values (NaN when none; the ratio NaN when max <= 0). */
function spread(values: number[]): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return [NaN, NaN];
  const high = Math.max(...finite);
  const low = Math.min(...finite);
  return [high - low, high > 0 ? low / high : NaN];
}

/** NaN-ignoring max and min (numpy's fmax, fmin). */
const fmax = (a: number, b: number) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.max(a, b));
const fmin = (a: number, b: number) => (Number.isNaN(a) ? b : Number.isNaN(b) ? a : Math.min(a, b));

/** The differences and ratios over a family of subgroups (each compared with the others). */
export function familyMetrics(rows: SubgroupMetrics[]): FamilyMetrics {
  const [dpDiff, dpRatio] = spread(rows.map((r) => r.positive_rate));
  const [fprDiff, fprRatio] = spread(rows.map((r) => r.fpr));
  const [tprDiff, tprRatio] = spread(rows.map((r) => r.tpr));
  const [fnrDiff] = spread(rows.map((r) => r.fnr));
  return {
    demographic_parity_difference: dpDiff,
    demographic_parity_ratio: dpRatio,
    equalized_odds_difference: fmax(tprDiff, fprDiff),
    equalized_odds_ratio: fmin(tprRatio, fprRatio),
    fpr_difference: fprDiff,
    fnr_difference: fnrDiff,
    four_fifths: dpRatio >= FOUR_FIFTHS,
  };
}

export interface OverallMetrics {
  positive_rate: number;
  fpr: number;
  fnr: number;
  accuracy: number;
  auc: number;
}

/** The metrics over all texts. */
export function overallMetrics(labels: number[], scores: ArrayLike<number>, threshold: number): OverallMetrics {
  const all = subgroupMetrics(labels, scores, labels.map(() => true), threshold);
  let right = 0;
  labels.forEach((l, i) => (right += Number((scores[i] >= threshold) === (l === 1))));
  return {
    positive_rate: all.positive_rate,
    fpr: all.fpr,
    fnr: all.fnr,
    accuracy: rate(right, labels.length),
    auc: all.subgroup_auc,
  };
}

// -- individual metrics ----------------------------------------------------------------------------
/** One counterfactual: text `source` with `token` replaced by `other` (both of `group`). */
export interface Swap {
  source: number;
  group: string;
  token: string;
  other: string;
  text: string;
}

/** Every swap of a mentioned token for each other token of its group, for every text (in
 * amlab.data.fairness.counterfactuals' order). */
export function counterfactuals(texts: string[], groups: TokenGroups): Swap[] {
  const out: Swap[] = [];
  texts.forEach((text, source) => {
    const present = new Set(words(text));
    for (const [group, tokens] of Object.entries(groups)) {
      for (const token of tokens) {
        if (!present.has(token)) continue;
        for (const other of tokens) if (other !== token) out.push({ source, group, token, other, text: swap(text, token, other) });
      }
    }
  });
  return out;
}

export interface PairMetrics {
  pairs: number;
  /** mean |f(x) - f(x')| */
  gap: number;
  /** the fraction of pairs decided differently at the threshold */
  flip_rate: number;
}

/** The gap and flip rate over the pairs, all and per group; `score[i]` is the score of
 * pair i's source text, `swappedScore[i]` of its swapped text. */
export function counterfactualMetrics(
  swaps: Swap[],
  score: ArrayLike<number>,
  swappedScore: ArrayLike<number>,
  threshold: number,
): { all: PairMetrics; groups: Record<string, PairMetrics> } {
  const over = (keep: (s: Swap) => boolean): PairMetrics => {
    let n = 0, gap = 0, flips = 0;
    swaps.forEach((s, i) => {
      if (!keep(s)) return;
      n++;
      gap += Math.abs(swappedScore[i] - score[i]);
      flips += Number(swappedScore[i] >= threshold !== score[i] >= threshold);
    });
    return { pairs: n, gap: rate(gap, n), flip_rate: rate(flips, n) };
  };
  const groups = [...new Set(swaps.map((s) => s.group))];
  return { all: over(() => true), groups: Object.fromEntries(groups.map((g) => [g, over((s) => s.group === g)])) };
}
