/**
 * Log-sum-exp (Gaussian kernel) energy, distance form (amlab.energy.lse):
 *   E(x) = -(1/beta) logsumexp_mu(-(beta/2) ||x - xi_mu||^2)
 *   grad E(x) = x - sum_mu softmax_mu xi_mu
 */
import { type EnergyGrad, type Memories, sqDistance } from "./types";

/** Energy, gradient and the softmax weight of every memory (written into `weights` (M,)). */
export function lseEnergyGrad(
  x: ArrayLike<number>,
  mem: Memories,
  beta: number,
  weights: Float64Array = new Float64Array(mem.m),
): EnergyGrad {
  const { m, d, data } = mem;
  let max = -Infinity;
  for (let mu = 0; mu < m; mu++) {
    const s = -0.5 * beta * sqDistance(x, mem, mu);
    weights[mu] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let mu = 0; mu < m; mu++) {
    const w = Math.exp(weights[mu] - max);
    weights[mu] = w;
    sum += w;
  }
  const grad = new Float64Array(d);
  for (let k = 0; k < d; k++) grad[k] = x[k];
  for (let mu = 0; mu < m; mu++) {
    const w = (weights[mu] /= sum);
    if (w === 0) continue;
    const off = mu * d;
    for (let k = 0; k < d; k++) grad[k] -= w * data[off + k];
  }
  return { energy: -(max + Math.log(sum)) / beta, grad };
}
