/**
 * Log-sum-exp energy in its two forms (amlab.energy.lse):
 *   distance: E(x) = -(1/beta) logsumexp_mu(-(beta/2) ||x - xi_mu||^2)
 *   dot:      E(x) = 1/2 ||x||^2 - (1/beta) logsumexp_mu(beta x . xi_mu)
 *   both:     grad E(x) = x - sum_mu softmax_mu xi_mu (the softmax of the form's scores)
 */
import { type EnergyGrad, type Memories, sqDistance } from "./types";

/** Energy, gradient and the softmax weight of every memory (written into `weights` (M,)). */
export function lseEnergyGrad(
  x: ArrayLike<number>,
  mem: Memories,
  beta: number,
  weights: Float64Array = new Float64Array(mem.m),
  form: "distance" | "dot" = "distance",
): EnergyGrad {
  const { m, d, data } = mem;
  let max = -Infinity;
  for (let mu = 0; mu < m; mu++) {
    const s = form === "dot" ? beta * dot(x, mem, mu) : -0.5 * beta * sqDistance(x, mem, mu);
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
  let half = 0; // the dot form's 1/2 ||x||^2
  if (form === "dot") for (let k = 0; k < d; k++) half += 0.5 * x[k] * x[k];
  return { energy: half - (max + Math.log(sum)) / beta, grad };
}

function dot(x: ArrayLike<number>, mem: Memories, mu: number): number {
  const { data, d } = mem;
  let s = 0;
  for (let k = 0; k < d; k++) s += x[k] * data[mu * d + k];
  return s;
}
