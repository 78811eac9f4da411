/**
 * Diffusion as associative memory (amlab.diffusion): the noise schedules, the exact denoiser
 * of a finite set (one attention step of an LSE memory at beta_t = 1/s_t^2), and the
 * probability-flow sampler that steps any denoiser from noise down to data.
 *
 *   forward:  x_t = alpha_t x_0 + sigma_t z,   scaled y = x_t / alpha_t = x_0 + s_t z
 *   denoiser: D(y) = sum_mu softmax_mu(-||y - xi_mu||^2 / (2 s_t^2)) xi_mu = y - grad E_t(y)
 *   energy:   E_t(y) = -s_t^2 log sum_mu exp(-||y - xi_mu||^2 / (2 s_t^2))
 *   ODE:      dx/dt = f(t) x - 1/2 g(t)^2 score,   score = (alpha_t D - x) / sigma_t^2
 */
import { lseEnergyGrad } from "./lse";
import type { Memories } from "./types";

/** A schedule's config as amlab.diffusion.Schedule.config() writes it. */
export interface ScheduleConfig {
  name: string;
  sigma_min?: number;
  sigma_max?: number;
  beta_min?: number;
  beta_max?: number;
  t_end?: number;
}

export interface Schedule {
  name: string;
  /** the last time of the sampler (t runs from 1 down to tEnd) */
  tEnd: number;
  alpha(t: number): number;
  sigma(t: number): number;
  /** f(t) = d log(alpha_t) / dt */
  drift(t: number): number;
  /** g(t)^2 = d(sigma_t^2)/dt - 2 f(t) sigma_t^2 */
  diffusionSq(t: number): number;
}

/** The VE or VP schedule of a config (amlab.diffusion.schedule_from_config). */
export function makeSchedule(config: ScheduleConfig): Schedule {
  if (config.name === "ve") {
    const lo = config.sigma_min ?? 0.01;
    const hi = config.sigma_max ?? 10;
    const logRatio = Math.log(hi / lo);
    const sigma = (t: number) => lo * Math.exp(logRatio * t);
    return {
      name: "ve",
      tEnd: 0,
      alpha: () => 1,
      sigma,
      drift: () => 0,
      diffusionSq: (t) => 2 * logRatio * sigma(t) ** 2,
    };
  }
  if (config.name === "vp") {
    const bmin = config.beta_min ?? 0.1;
    const bmax = config.beta_max ?? 20;
    const integral = (t: number) => bmin * t + 0.5 * (bmax - bmin) * t * t;
    const betaT = (t: number) => bmin + t * (bmax - bmin);
    return {
      name: "vp",
      tEnd: config.t_end ?? 1e-3,
      alpha: (t) => Math.exp(-0.5 * integral(t)),
      sigma: (t) => Math.sqrt(-Math.expm1(-integral(t))),
      drift: (t) => -0.5 * betaT(t),
      diffusionSq: betaT,
    };
  }
  throw new Error(`unknown schedule ${JSON.stringify(config.name)}: expected "ve" or "vp"`);
}

/** s_t = sigma_t / alpha_t, the noise level in the scaled coordinates y = x / alpha_t. */
export function noiseLevel(schedule: Schedule, t: number): number {
  return schedule.sigma(t) / schedule.alpha(t);
}

/** steps + 1 times from 1 down to tEnd, evenly spaced. */
export function sampleTimes(schedule: Schedule, steps: number): number[] {
  return Array.from({ length: steps + 1 }, (_, k) =>
    k === steps ? schedule.tEnd : 1 - (1 - schedule.tEnd) * (k / steps),
  );
}

/** The standard deviation of the sampler's start, sqrt(alpha_1^2 + sigma_1^2). */
export function priorScale(schedule: Schedule): number {
  return Math.hypot(schedule.alpha(1), schedule.sigma(1));
}

/** The exact denoiser of the memories at noise level s (amlab.diffusion.EmpiricalDenoiser):
 * one attention step of the LSE memory with beta = 1/s^2, its energy E_t(y), and the softmax
 * weight of every memory (written into `weights`). */
export function empiricalDenoise(
  y: ArrayLike<number>,
  mem: Memories,
  s: number,
  weights: Float64Array = new Float64Array(mem.m),
): { denoised: Float64Array; energy: number; weights: Float64Array } {
  const { energy, grad } = lseEnergyGrad(y, mem, 1 / (s * s), weights);
  const denoised = grad.map((g, k) => y[k] - g);
  return { denoised, energy, weights };
}

/** empiricalDenoise at a state x (not scaled) at time t: y = x / alpha_t, s = s_t. */
export function empiricalDenoiseAt(
  schedule: Schedule,
  x: Float64Array,
  mem: Memories,
  t: number,
): { denoised: Float64Array; energy: number; weights: Float64Array } {
  const alpha = schedule.alpha(t);
  return empiricalDenoise(x.map((v) => v / alpha), mem, noiseLevel(schedule, t));
}

/** D(x, t) for every row of x (states at time t, not scaled). */
export type DenoiseFn = (x: Float64Array[], t: number) => Float64Array[] | Promise<Float64Array[]>;

/** The empirical denoiser as a DenoiseFn, row i denoised by memory mems[i]: D(x, t) is the
 * attention step at y = x / alpha_t, beta = 1 / s_t^2. */
export function empiricalDenoiser(schedule: Schedule, mems: Memories[]): DenoiseFn {
  return (x, t) => x.map((row, i) => empiricalDenoiseAt(schedule, row, mems[i], t).denoised);
}

/** dx/dt of the probability-flow ODE at x, given its denoised estimate D(x, t). */
export function flowVelocity(
  schedule: Schedule,
  x: ArrayLike<number>,
  denoised: ArrayLike<number>,
  t: number,
): Float64Array {
  const alpha = schedule.alpha(t);
  const sigma2 = schedule.sigma(t) ** 2;
  const f = schedule.drift(t);
  const half = 0.5 * schedule.diffusionSq(t);
  return Float64Array.from(x, (xi, k) => f * xi - (half * (alpha * denoised[k] - xi)) / sigma2);
}

export interface Trajectory {
  times: number[];
  /** states[k][row]: x at times[k] (k = 0..steps) */
  states: Float64Array[][];
  /** denoised[k][row]: D(x_k, t_k), the estimate of the clean image at each step; the last
   * is the sample (the usual final denoising step at tEnd) */
  denoised: Float64Array[][];
}

/** the probability-flow samplers of sampleFlow (Heun, Euler: no noise after the start) */
export const FLOW_SAMPLERS = ["heun", "euler"] as const;
export type FlowSampler = (typeof FLOW_SAMPLERS)[number];

/** Integrate the probability-flow ODE from the states `start` at t = 1 down to tEnd (as
 * amlab.diffusion.sample), by Euler or Heun, recording every state and its denoised estimate.
 * Heun's first call of a step is D(x_k, t_k), so a run makes 2 * steps + 1 calls (Euler:
 * steps + 1). */
export async function sampleFlow(
  schedule: Schedule,
  start: Float64Array[],
  steps: number,
  method: FlowSampler,
  denoise: DenoiseFn,
): Promise<Trajectory> {
  const times = sampleTimes(schedule, steps);
  const states = [start.map((x) => Float64Array.from(x))];
  const denoised: Float64Array[][] = [];
  for (let k = 0; k < steps; k++) {
    const [t, next] = [times[k], times[k + 1]];
    const dt = next - t;
    const x = states[k];
    const d = await denoise(x, t);
    denoised.push(d);
    const v = x.map((row, i) => flowVelocity(schedule, row, d[i], t));
    let moved = x.map((row, i) => row.map((xi, j) => xi + v[i][j] * dt));
    if (method === "heun") {
      const d2 = await denoise(moved, next);
      const v2 = moved.map((row, i) => flowVelocity(schedule, row, d2[i], next));
      moved = x.map((row, i) => row.map((xi, j) => xi + 0.5 * (v[i][j] + v2[i][j]) * dt));
    }
    if (!moved.every((row) => row.every(Number.isFinite))) {
      throw new Error(`sampling diverged at step ${k + 1} (t = ${next})`);
    }
    states.push(moved);
  }
  denoised.push(await denoise(states[steps], times[steps]));
  return { times, states, denoised };
}

/** Principal axes (k, D) and the mean (D,) they are taken about (amlab.explain.export). */
export interface Axes {
  mean: number[];
  axes: number[][];
}

/** The coordinates of x on the principal axes. */
export function project(x: ArrayLike<number>, pca: Axes): number[] {
  return pca.axes.map((axis) => axis.reduce((s, a, k) => s + a * (x[k] - pca.mean[k]), 0));
}
