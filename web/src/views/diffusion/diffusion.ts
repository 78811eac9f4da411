/**
 * The trained denoisers (amlab.explain.diffusion_onnx), class-conditional and text-prompted,
 * run in the page by ONNX Runtime Web, and the empirical memory they are compared with.
 */
import type { InferenceSession, Tensor } from "onnxruntime-web";
import { type Request, sameRequest } from "../../lib/captions";
import { type DenoiserInfo, type Digits, digitImage } from "../../lib/data";
import { type Memories, noiseLevel, type Schedule } from "../../lib/math";

/** the most sampler steps the view runs */
export const MAX_STEPS = 200;

/** The denoiser's outputs for a batch of states: guided, conditional and unconditional. */
export interface Guided {
  guided: Float64Array[];
  cond: Float64Array[];
  uncond: Float64Array[];
}

/** What a row is prompted with: a class label (the class model) or a prompt's token ids (the
 * text model, amlab.data.captions.tokenize). */
export type Condition = number | number[];

export interface LearnedDenoiser {
  info: DenoiserInfo;
  /** D_w(x, t) = D(x, t, none) + w (D(x, t, c) - D(x, t, none)) for each row of x (states at
   * time t) and its condition c: one ONNX call, the conditional and unconditional rows in one
   * batch. */
  denoise(x: Float64Array[], t: number, conditions: Condition[], w: number): Promise<Guided>;
}

/** The graph's conditioning input for b conditional rows then b unconditional ones: labels
 * (2b,) with -1 for "no class", or token ids (2b, L) padded with -1 (a row of -1 is the empty
 * prompt), L the longest prompt's length (at least 1), as amlab.data.captions.tokenize pads. */
function conditionFeed(text: boolean, conditions: Condition[]): { data: BigInt64Array; dims: number[] } {
  const b = conditions.length;
  if (!text) {
    return { data: BigInt64Array.from([...(conditions as number[]), ...conditions.map(() => -1)], BigInt), dims: [2 * b] };
  }
  const rows = conditions as number[][];
  const length = Math.max(1, ...rows.map((r) => r.length));
  const data = new BigInt64Array(2 * b * length).fill(-1n);
  rows.forEach((row, i) => row.forEach((id, j) => (data[i * length + j] = BigInt(id))));
  return { data, dims: [2 * b, length] };
}

/** The learned denoiser of a model's ONNX session (`Tensor`: the runtime's tensor class). */
export function learnedDenoiser(
  info: DenoiserInfo,
  session: InferenceSession,
  tensor: typeof Tensor,
  schedule: Schedule,
): LearnedDenoiser {
  const [yName, sName, conditionName] = info.inputs;
  const text = conditionName === "tokens";
  return {
    info,
    async denoise(x, t, conditions, w) {
      const b = x.length;
      const d = x[0].length;
      const alpha = schedule.alpha(t);
      const y = new Float32Array(2 * b * d);
      x.forEach((row, i) => {
        for (let k = 0; k < d; k++) y[i * d + k] = y[(b + i) * d + k] = row[k] / alpha;
      });
      const condition = conditionFeed(text, conditions);
      const out = await session.run({
        [yName]: new tensor("float32", y, [2 * b, d]),
        [sName]: new tensor("float32", new Float32Array(2 * b).fill(noiseLevel(schedule, t)), [2 * b]),
        [conditionName]: new tensor("int64", condition.data, condition.dims),
      });
      const flat = out[info.outputs[0]].data as Float32Array;
      const rows = (from: number) =>
        Array.from({ length: b }, (_, i) => Float64Array.from(flat.subarray((from + i) * d, (from + i + 1) * d)));
      const cond = rows(0);
      const uncond = rows(b);
      const guided = cond.map((c, i) => c.map((v, k) => uncond[i][k] + w * (v - uncond[i][k])));
      return { guided, cond, uncond };
    },
  };
}

/** The stored digits of one class (row-major (K, D)) and their indices among all digits. */
export function classMemory(digits: Digits, label: number): Memories & { index: number[] } {
  return digitMemory(digits, digits.labels.flatMap((l, i) => (l === label ? [i] : [])));
}

/** The stored digits `index` as a memory (row-major (K, D)), with their indices. */
export function digitMemory(digits: Digits, index: number[]): Memories & { index: number[] } {
  const data = new Float64Array(index.length * digits.dim);
  index.forEach((i, r) => data.set(digitImage(digits, i), r * digits.dim));
  return { data, m: index.length, d: digits.dim, index };
}

/** The memory of a text prompt: the stored digits whose caption (`requests`: each digit's
 * caption read as a request) asks for what the prompt asks, same digit and same terciles
 * (`exact`); where no digit has that caption, the digits of the prompt's class (every digit
 * if it names none), and `exact` is false. */
export function promptMemory(
  digits: Digits,
  requests: (Request | null)[],
  request: Request,
): Memories & { index: number[]; exact: boolean } {
  const exact = requests.flatMap((r, i) => (r && sameRequest(r, request) ? [i] : []));
  if (exact.length) return { ...digitMemory(digits, exact), exact: true };
  const index = digits.labels.flatMap((l, i) => (request.digit === null || l === request.digit ? [i] : []));
  return { ...digitMemory(digits, index), exact: false };
}
