/**
 * The ListOps transformer's forward pass (amlab.models.listops.ListOpsTransformer), written
 * out step by step so that the view can show every intermediate: token and position
 * embeddings, pre-norm blocks (layer norm, per-head queries/keys/values, scores with the
 * padding mask, softmax, the heads' outputs, their projection, the residual stream, the MLP
 * before and after its GELU), the class token's read-out after every block (the logit
 * lens), the logits and the probabilities. Computed in float64 from the float32 weights;
 * tested against amlab.explain.listops.trace (vitest, vectors from `amlab export`).
 *
 * Layouts follow the Python side, row-major: (L, D) per token, (H, L, D/H) per head,
 * (H, L, L) for scores and weights (query rows, key columns).
 */

import { lseEnergyGrad } from "./lse";
import { memories } from "./types";

export interface TransformerConfig {
  vocab_size: number;
  classes: number;
  dim: number;
  layers: number;
  heads: number;
  mlp_ratio: number;
  max_len: number;
  share_weights: boolean;
  /** a next-token model: keys after the query masked, every position read out */
  causal?: boolean;
}

/** The model's state_dict by name (nn.Linear weights are (out, in)). */
export interface TransformerWeights {
  config: TransformerConfig;
  tensors: Record<string, Float32Array>;
}

/** What is switched off: the attention or MLP of every block, single heads [block, head]. */
export interface Ablation {
  attention: boolean;
  mlp: boolean;
  headsOff: [number, number][];
}

export const NO_ABLATION: Ablation = { attention: true, mlp: true, headsOff: [] };

export interface BlockTrace {
  ln1: Float64Array;
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  /** (H, L, L): q.k / sqrt(D/H), -Infinity at padded keys (and, causal, at later keys) */
  scores: Float64Array;
  /** (H, L, L): softmax over keys (columns) of each query (row) */
  weights: Float64Array;
  heads: Float64Array;
  /** (L, D): the heads' outputs side by side, switched-off heads zeroed */
  mixed: Float64Array;
  attnOut: Float64Array;
  /** (L, D): the residual stream after attention (unchanged when attention is off) */
  mid: Float64Array;
  ln2: Float64Array;
  mlpPre: Float64Array;
  mlpPost: Float64Array;
  mlpOut: Float64Array;
  /** (L, D): the residual stream after the block */
  out: Float64Array;
  /** (classes,): the class token read out after this block (final norm and head); a causal
   * model's (L, classes): every position's */
  lensLogits: Float64Array;
}

export interface Trace {
  n: number;
  embed: Float64Array;
  position: Float64Array;
  x: Float64Array;
  blocks: BlockTrace[];
  /** the class token after the final norm (D,), and its logits and probabilities (classes,);
   * a causal model's are every position's: (L, D), (L, classes) */
  final: Float64Array;
  logits: Float64Array;
  probs: Float64Array;
}

const EPS = 1e-5; // nn.LayerNorm's

function tensor(w: TransformerWeights, name: string): Float32Array {
  const t = w.tensors[name];
  if (!t) throw new Error(`the model has no tensor ${name}`);
  return t;
}

/** Layer norm of each of the n rows of x (n, d). */
export function layerNorm(x: Float64Array, n: number, d: number, gain: Float32Array, bias: Float32Array): Float64Array {
  const out = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    const off = i * d;
    let mean = 0;
    for (let j = 0; j < d; j++) mean += x[off + j];
    mean /= d;
    let variance = 0;
    for (let j = 0; j < d; j++) variance += (x[off + j] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / d + EPS);
    for (let j = 0; j < d; j++) out[off + j] = (x[off + j] - mean) * scale * gain[j] + bias[j];
  }
  return out;
}

/** x (n, din) W^T + b, W (dout, din) as nn.Linear stores it. */
export function linear(x: Float64Array, n: number, din: number, weight: Float32Array, bias: Float32Array): Float64Array {
  const dout = bias.length;
  const out = new Float64Array(n * dout);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < dout; o++) {
      let s = bias[o];
      const wo = o * din;
      const xi = i * din;
      for (let j = 0; j < din; j++) s += x[xi + j] * weight[wo + j];
      out[i * dout + o] = s;
    }
  }
  return out;
}

/** The error function to float64 accuracy (JavaScript has none): its Taylor series below
 * |x| = 2.5, the continued fraction of erfc above. */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    let term = x;
    let sum = x;
    const x2 = x * x;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** PyTorch's default (exact) GELU: x Phi(x). */
export const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

/** softmax of v (entries -Infinity get weight 0). */
export function softmax(v: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < v.length; i++) max = Math.max(max, v[i]);
  const out = new Float64Array(v.length);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += out[i] = Math.exp(v[i] - max);
  for (let i = 0; i < v.length; i++) out[i] /= sum;
  return out;
}

/** Every intermediate of the forward pass of one sequence (class token first, padding 0). */
export function forward(w: TransformerWeights, tokens: number[], ablation: Ablation = NO_ABLATION): Trace {
  const c = w.config;
  const n = tokens.length;
  if (n < 1 || n > c.max_len) throw new Error(`a sequence of ${n} tokens; the model takes 1..${c.max_len}`);
  const d = c.dim;
  const h = c.heads;
  const hd = d / h;
  const embedTable = tensor(w, "embed.weight");
  const positionTable = tensor(w, "position.weight");
  const embed = new Float64Array(n * d);
  const position = new Float64Array(n * d);
  const x0 = new Float64Array(n * d);
  tokens.forEach((t, i) => {
    if (!(t >= 0 && t < c.vocab_size)) throw new Error(`token id ${t} outside 0..${c.vocab_size - 1}`);
    for (let j = 0; j < d; j++) {
      embed[i * d + j] = embedTable[t * d + j];
      position[i * d + j] = positionTable[i * d + j];
      x0[i * d + j] = embed[i * d + j] + position[i * d + j];
    }
  });
  const off = new Set(ablation.headsOff.map(([b, k]) => `${b}:${k}`));
  const rows = c.causal ? n : 1;
  const readOut = (stream: Float64Array) => {
    const final = layerNorm(stream.subarray(0, rows * d), rows, d, tensor(w, "norm.weight"), tensor(w, "norm.bias"));
    return { final, logits: linear(final, rows, d, tensor(w, "head.weight"), tensor(w, "head.bias")) };
  };
  const blocks: BlockTrace[] = [];
  let x = x0;
  for (let layer = 0; layer < c.layers; layer++) {
    const p = `blocks.${c.share_weights ? 0 : layer}.`;
    const ln1 = layerNorm(x, n, d, tensor(w, p + "norm1.weight"), tensor(w, p + "norm1.bias"));
    const qkv = linear(ln1, n, d, tensor(w, p + "qkv.weight"), tensor(w, p + "qkv.bias"));
    const q = new Float64Array(h * n * hd);
    const k = new Float64Array(h * n * hd);
    const v = new Float64Array(h * n * hd);
    for (let i = 0; i < n; i++) {
      for (let head = 0; head < h; head++) {
        for (let j = 0; j < hd; j++) {
          const at = (head * n + i) * hd + j;
          q[at] = qkv[i * 3 * d + head * hd + j];
          k[at] = qkv[i * 3 * d + d + head * hd + j];
          v[at] = qkv[i * 3 * d + 2 * d + head * hd + j];
        }
      }
    }
    const scale = 1 / Math.sqrt(hd);
    const scores = new Float64Array(h * n * n);
    const weights = new Float64Array(h * n * n);
    const heads = new Float64Array(h * n * hd);
    const mixed = new Float64Array(n * d);
    for (let head = 0; head < h; head++) {
      for (let i = 0; i < n; i++) {
        const row = (head * n + i) * n;
        for (let jj = 0; jj < n; jj++) {
          let s = 0;
          for (let e = 0; e < hd; e++) s += q[(head * n + i) * hd + e] * k[(head * n + jj) * hd + e];
          scores[row + jj] = tokens[jj] === 0 || (c.causal && jj > i) ? -Infinity : s * scale;
        }
        weights.set(softmax(scores.subarray(row, row + n)), row);
        for (let e = 0; e < hd; e++) {
          let s = 0;
          for (let jj = 0; jj < n; jj++) s += weights[row + jj] * v[(head * n + jj) * hd + e];
          heads[(head * n + i) * hd + e] = s;
          if (!off.has(`${layer}:${head}`)) mixed[i * d + head * hd + e] = s;
        }
      }
    }
    const attnOut = linear(mixed, n, d, tensor(w, p + "proj.weight"), tensor(w, p + "proj.bias"));
    const mid = ablation.attention ? x.map((value, i) => value + attnOut[i]) : x.slice();
    const ln2 = layerNorm(mid, n, d, tensor(w, p + "norm2.weight"), tensor(w, p + "norm2.bias"));
    const up = tensor(w, p + "up.bias");
    const mlpPre = linear(ln2, n, d, tensor(w, p + "up.weight"), up);
    const mlpPost = mlpPre.map(gelu);
    const mlpOut = linear(mlpPost, n, up.length, tensor(w, p + "down.weight"), tensor(w, p + "down.bias"));
    const out = ablation.mlp ? mid.map((value, i) => value + mlpOut[i]) : mid.slice();
    const lensLogits = readOut(out).logits;
    blocks.push({ ln1, q, k, v, scores, weights, heads, mixed, attnOut, mid, ln2, mlpPre, mlpPost, mlpOut, out, lensLogits });
    x = out;
  }
  const { final, logits } = readOut(x);
  const probs = new Float64Array(logits.length);
  for (let r = 0; r < rows; r++) probs.set(softmax(logits.subarray(r * c.classes, (r + 1) * c.classes)), r * c.classes);
  return { n, embed, position, x: x0, blocks, final, logits, probs };
}

/** Sampling settings: logits / temperature, then the top k, then the smallest set of the
 * most likely tokens whose probability reaches top p (k = 0 and p = 1 switch those off). */
export interface Sampling {
  temperature: number;
  topK: number;
  topP: number;
}

/** The distribution a sampler draws from (renormalised; tokens cut off get 0). Ties at the
 * cut are broken by the lower index, as a stable descending sort does. */
export function samplingDistribution(logits: ArrayLike<number>, s: Sampling): Float64Array {
  if (!(s.temperature > 0)) throw new Error("the temperature must be positive");
  const p = softmax(Array.from(logits, (v) => v / s.temperature));
  const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
  const keep = new Set<number>();
  let mass = 0;
  for (const [rank, i] of order.entries()) {
    if (s.topK > 0 && rank >= s.topK) break;
    if (rank > 0 && mass >= s.topP) break;
    keep.add(i);
    mass += p[i];
  }
  const out = new Float64Array(p.length);
  let total = 0;
  for (const i of keep) total += p[i];
  for (const i of keep) out[i] = p[i] / total;
  return out;
}

/** The index whose cumulative probability first exceeds u in [0, 1). */
export function drawIndex(p: ArrayLike<number>, u: number): number {
  let cumulative = 0;
  let last = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i] <= 0) continue;
    last = i;
    cumulative += p[i];
    if (u < cumulative) return i;
  }
  return last;
}

/**
 * One attention head's query as one associative-memory update (Ramsauer et al.'s modern
 * Hopfield network): the keys K (n, d) are the memories, beta = 1/sqrt(d), and
 *   E(q) = 1/2 |q|^2 - (1/beta) log sum_j exp(beta k_j . q)   (padded keys left out)
 * Its update q' = K^T softmax(beta K q) uses exactly the head's attention weights, and
 * (concave-convex procedure) never raises the energy. Returns both energies, q' and the
 * weights.
 */
export function headAsMemory(q: ArrayLike<number>, keys: Float64Array, keep: boolean[], beta: number) {
  const d = q.length;
  const kept = keep.flatMap((on, j) => (on ? [j] : []));
  const mem = memories(Float64Array.from(kept.flatMap((j) => Array.from(keys.subarray(j * d, (j + 1) * d)))), d);
  const keptWeights = new Float64Array(mem.m);
  const before = lseEnergyGrad(q, mem, beta, keptWeights, "dot");
  const weights = new Float64Array(keep.length);
  const next = new Float64Array(d); // the softmax-weighted mean of the keys itself
  kept.forEach((j, i) => {
    weights[j] = keptWeights[i];
    for (let e = 0; e < d; e++) next[e] += keptWeights[i] * mem.data[i * d + e];
  });
  return { energy: before.energy, weights, next, nextEnergy: lseEnergyGrad(next, mem, beta, undefined, "dot").energy };
}

/** The weights' tensors, cut out of one float32 buffer by the manifest's names and offsets. */
export function unpackTensors(
  buffer: ArrayBuffer,
  entries: { name: string; shape: number[]; offset: number }[],
): Record<string, Float32Array> {
  const all = new Float32Array(buffer);
  const out: Record<string, Float32Array> = {};
  let total = 0;
  for (const e of entries) {
    const size = e.shape.reduce((a, b) => a * b, 1);
    out[e.name] = all.subarray(e.offset, e.offset + size);
    total += size;
  }
  if (total !== all.length) throw new Error(`the weights file holds ${all.length} floats; the manifest lists ${total}`);
  return out;
}
