/**
 * DrDAM random features, "sincos" map (amlab.energy.random_features):
 *   h = sqrt(beta) S x,  phi(x) = (1/sqrt(Y)) [cos h, sin h],  T = sum_mu phi(xi_mu)
 *   E~(x) = -(1/beta) log(max(phi(x) . T, eps)),  gradient zero where phi(x) . T <= eps.
 * S is (rows, D) row-major; a model uses its first Y rows. T is laid out [cos (Y), sin (Y)].
 */
import { type EnergyGrad, type Memories, row } from "./types";

export interface Projections {
  S: Float32Array | Float64Array;
  rows: number;
  d: number;
}

function project(x: ArrayLike<number>, proj: Projections, j: number, root: number): number {
  const { S, d } = proj;
  const off = j * d;
  let h = 0;
  for (let k = 0; k < d; k++) h += S[off + k] * x[k];
  return h * root;
}

/** out[j] += scale cos h_j(x), out[Y + j] += scale sin h_j(x) for the first Y projections. */
function addTrig(
  out: Float64Array,
  x: ArrayLike<number>,
  proj: Projections,
  y: number,
  beta: number,
  scale: number,
): void {
  const root = Math.sqrt(beta);
  for (let j = 0; j < y; j++) {
    const h = project(x, proj, j, root);
    out[j] += Math.cos(h) * scale;
    out[y + j] += Math.sin(h) * scale;
  }
}

/** phi(x) (2Y,) for the first Y projections. */
export function features(
  x: ArrayLike<number>,
  proj: Projections,
  y: number,
  beta: number,
): Float64Array {
  const phi = new Float64Array(2 * y);
  addTrig(phi, x, proj, y, beta, 1 / Math.sqrt(y));
  return phi;
}

/**
 * sum_mu [cos h_j(xi_mu), sin h_j(xi_mu)] for the first Y projections, *unnormalised*:
 * T for any Y' <= Y is this prefix divided by sqrt(Y') (see `featureTensor`).
 */
export function featureSums(
  mem: Memories,
  proj: Projections,
  y: number,
  beta: number,
): Float64Array {
  const sums = new Float64Array(2 * y);
  for (let mu = 0; mu < mem.m; mu++) {
    addTrig(sums, row(mem, mu), proj, y, beta, 1);
  }
  return sums;
}

/** T (2Y,) of a model with the first Y projections, from featureSums of >= Y projections. */
export function featureTensor(sums: Float64Array, y: number): Float64Array {
  const total = sums.length / 2;
  const t = new Float64Array(2 * y);
  const norm = 1 / Math.sqrt(y);
  for (let j = 0; j < y; j++) {
    t[j] = sums[j] * norm;
    t[y + j] = sums[total + j] * norm;
  }
  return t;
}

/** E~(x) and its gradient for the model (first Y projections, tensor T (2Y,)). */
export function rfEnergyGrad(
  x: ArrayLike<number>,
  proj: Projections,
  T: Float64Array,
  beta: number,
  eps = 1e-5,
): EnergyGrad & { z: number } {
  const y = T.length / 2;
  const { S, d } = proj;
  const root = Math.sqrt(beta);
  const norm = 1 / Math.sqrt(y);
  const dz = new Float64Array(d);
  let z = 0;
  for (let j = 0; j < y; j++) {
    const h = project(x, proj, j, root);
    const c = Math.cos(h);
    const s = Math.sin(h);
    z += c * T[j] + s * T[y + j];
    const g = c * T[y + j] - s * T[j];
    const off = j * d;
    for (let k = 0; k < d; k++) dz[k] += g * S[off + k];
  }
  z *= norm;
  const grad = new Float64Array(d);
  if (z > eps) {
    const scale = (root * norm) / (-beta * z);
    for (let k = 0; k < d; k++) grad[k] = dz[k] * scale;
  }
  return { energy: -Math.log(Math.max(z, eps)) / beta, grad, z };
}
