/**
 * The trained class-conditional denoiser (amlab.explain.diffusion_onnx), run in the page by
 * ONNX Runtime Web, and the empirical memory it is compared with.
 */
import { type DiffusionInfo, type Digits, digitImage } from "../../lib/data";
import { type Memories, noiseLevel, type Schedule } from "../../lib/math";
import { onnxSession, ort } from "../../lib/onnx";

/** The denoiser's outputs for a batch of states: guided, conditional and unconditional. */
export interface Guided {
  guided: Float64Array[];
  cond: Float64Array[];
  uncond: Float64Array[];
}

export interface LearnedDenoiser {
  info: DiffusionInfo;
  /** D_w(x, t) = D(x, t, none) + w (D(x, t, label) - D(x, t, none)) for each row of x (states
   * at time t) and its class label: one ONNX call, the conditional and unconditional rows in
   * one batch. */
  denoise(x: Float64Array[], t: number, labels: number[], w: number): Promise<Guided>;
}

export async function makeDenoiser(
  info: DiffusionInfo,
  model: Uint8Array,
  schedule: Schedule,
): Promise<LearnedDenoiser> {
  const session = await onnxSession(model);
  return {
    info,
    async denoise(x, t, labels, w) {
      const b = x.length;
      const d = x[0].length;
      const alpha = schedule.alpha(t);
      const y = new Float32Array(2 * b * d);
      x.forEach((row, i) => {
        for (let k = 0; k < d; k++) y[i * d + k] = y[(b + i) * d + k] = row[k] / alpha;
      });
      const rowLabels = BigInt64Array.from([...labels, ...labels.map(() => -1)], BigInt);
      const out = await session.run({
        y: new ort.Tensor("float32", y, [2 * b, d]),
        s: new ort.Tensor("float32", new Float32Array(2 * b).fill(noiseLevel(schedule, t)), [2 * b]),
        labels: new ort.Tensor("int64", rowLabels, [2 * b]),
      });
      const flat = out.denoised.data as Float32Array;
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
  const index = digits.labels.flatMap((l, i) => (l === label ? [i] : []));
  const data = new Float64Array(index.length * digits.dim);
  index.forEach((i, r) => data.set(digitImage(digits, i), r * digits.dim));
  return { data, m: index.length, d: digits.dim, index };
}
