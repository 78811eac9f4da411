/**
 * Log-sum-ReLU (Epanechnikov kernel) energy (amlab.energy.lsr):
 *   E(x) = -(1/beta) log(eps + Z(x)),  Z(x) = sum_mu ReLU(1 - (beta/2) ||x - xi_mu||^2)
 * Memory mu is active when (beta/2)||x - xi_mu||^2 < 1 (support radius sqrt(2/beta)).
 * grad E = sum_{active} (x - xi_mu) / (eps + Z), defined as zero outside every support.
 */
import { type EnergyGrad, type Memories, sqDistance } from "./types";

export interface LsrStats {
  z: number;
  count: number;
  /** sum of the active memories (D,) */
  activeSum: Float64Array;
}

/** One pass over the memories; `weights` (M,) receives ReLU(1 - (beta/2) d^2) per memory. */
function lsrStats(
  x: ArrayLike<number>,
  mem: Memories,
  beta: number,
  weights?: Float64Array,
): LsrStats {
  const { m, d, data } = mem;
  const activeSum = new Float64Array(d);
  let z = 0;
  let count = 0;
  for (let mu = 0; mu < m; mu++) {
    const w = 1 - 0.5 * beta * sqDistance(x, mem, mu);
    if (weights) weights[mu] = w > 0 ? w : 0;
    if (w > 0) {
      z += w;
      count++;
      const off = mu * d;
      for (let k = 0; k < d; k++) activeSum[k] += data[off + k];
    }
  }
  return { z, count, activeSum };
}

function lsrEnergyFromZ(z: number, beta: number, eps = 0): number {
  return eps + z > 0 ? -Math.log(eps + z) / beta : Infinity;
}

/** Options of `lsrEnergyGrad`: eps (default 0), `weights` (M,) to receive each memory's ReLU
 * term, and `fixedPoint` for the exact solver's direction instead of the gradient. */
export interface LsrOptions {
  eps?: number;
  weights?: Float64Array;
  fixedPoint?: boolean;
}

/**
 * Energy and a descent direction from one pass: the gradient sum_active (x - xi) / (eps + Z),
 * or with `fixedPoint` LSR's exact solver x - centroid(active set), taken with step 1
 * (amlab.models.DenseAM's "fixed_point"); zero outside every support.
 */
export function lsrEnergyGrad(
  x: ArrayLike<number>,
  mem: Memories,
  beta: number,
  { eps = 0, weights, fixedPoint = false }: LsrOptions = {},
): EnergyGrad & LsrStats {
  const stats = lsrStats(x, mem, beta, weights);
  const { z, count, activeSum } = stats;
  const grad = new Float64Array(mem.d);
  if (count > 0 && fixedPoint) {
    // x - mean, as amlab computes it: exactly zero at a fixed point, where the solver stops
    for (let k = 0; k < mem.d; k++) grad[k] = x[k] - activeSum[k] / count;
  } else if (count > 0) {
    const denom = Math.max(eps + z, Number.MIN_VALUE);
    for (let k = 0; k < mem.d; k++) grad[k] = (count * x[k] - activeSum[k]) / denom;
  }
  return { ...stats, energy: lsrEnergyFromZ(z, beta, eps), grad };
}
