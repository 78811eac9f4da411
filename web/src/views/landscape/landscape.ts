/**
 * The 2-D landscape of view 1: energy field, descent paths, basins and minima, for the LSE
 * and LSR energies over memories in the unit square. All numbers come from lib/math.
 */
import {
  descend,
  type EnergyGrad,
  lseEnergyGrad,
  lsrEnergyGrad,
  lsrMinima,
  type Memories,
  nearestMemory,
  type Path,
  row,
  sqDistance,
} from "../../lib/math";

export type Kind = "lse" | "lsr";

export interface Minimum {
  point: Float64Array;
  /** a single memory's minimum (else emergent) */
  stored: boolean;
}

/** The descent the view draws: LSE by gradient descent with step eta, LSR by its exact
 * solver (the centroid of the active set, step 1), as DenseAM's "gd" and "fixed_point". */
function oracle(kind: Kind, mem: Memories, beta: number): (x: Float64Array) => EnergyGrad {
  return kind === "lse"
    ? (x) => lseEnergyGrad(x, mem, beta)
    : (x) => lsrEnergyGrad(x, mem, beta, { fixedPoint: true });
}

const LSE_STEPS = 500;
const LSE_TOL = 1e-7;
const LSR_STEPS = 100;

export function trajectory(
  kind: Kind,
  mem: Memories,
  beta: number,
  eta: number,
  start: ArrayLike<number>,
): Path {
  return kind === "lse"
    ? descend(oracle(kind, mem, beta), start, LSE_STEPS, eta, LSE_TOL)
    : descend(oracle(kind, mem, beta), start, LSR_STEPS, 1, 0);
}

/** Energy at the centres of an n x n grid over [0,1]^2; index j * n + i is (x_i, y_j). */
export function energyField(kind: Kind, mem: Memories, beta: number, n: number): Float64Array {
  const values = new Float64Array(n * n);
  const x = new Float64Array(2);
  const f = oracle(kind, mem, beta);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      x[0] = (i + 0.5) / n;
      x[1] = (j + 0.5) / n;
      values[j * n + i] = mem.m ? f(x).energy : Infinity;
    }
  }
  return values;
}

export interface Basins {
  n: number;
  /** index into minima of the minimum each grid start descends to; -1: none (LSR: outside
   * every support, where the energy is +inf; LSE: did not converge) */
  labels: Int32Array;
  minima: Minimum[];
}

function minPairDistance(mem: Memories): number {
  let best = Infinity;
  for (let a = 0; a < mem.m; a++) {
    for (let b = a + 1; b < mem.m; b++) {
      best = Math.min(best, Math.sqrt(sqDistance(row(mem, a), mem, b)));
    }
  }
  return Number.isFinite(best) ? best : 1;
}

/** LSR: every minimum exactly (enumeration), basins by the exact solver from each start. */
export function lsrBasins(mem: Memories, beta: number, n: number): Basins {
  const found = lsrMinima(mem, beta);
  const key = (s: number[]) => [...s].sort((a, b) => a - b).join(",");
  const index = new Map(found.minima.map((mn, i) => [key(mn.support), i]));
  const labels = new Int32Array(n * n).fill(-1);
  const f = oracle("lsr", mem, beta);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      const path = descend(f, [(i + 0.5) / n, (j + 0.5) / n], LSR_STEPS, 1, 0);
      if (!path.converged) continue;
      const end = path.states[path.states.length - 1];
      const support: number[] = [];
      for (let mu = 0; mu < mem.m; mu++) if (0.5 * beta * sqDistance(end, mem, mu) < 1) support.push(mu);
      labels[j * n + i] = index.get(key(support)) ?? -1;
    }
  }
  return { n, labels, minima: found.minima };
}

/** LSE: minima have no closed form; they are the distinct end points of gradient descent
 * from every grid start (merged within 1e-3), stored when within a quarter of the smallest
 * memory distance of a memory (amlab.analysis.lse_minima's rule), else emergent. */
export function lseBasins(mem: Memories, beta: number, eta: number, n: number): Basins {
  const labels = new Int32Array(n * n).fill(-1);
  const minima: Minimum[] = [];
  const merge = 1e-3;
  const storedRadius = 0.25 * minPairDistance(mem);
  const f = oracle("lse", mem, beta);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      const path = descend(f, [(i + 0.5) / n, (j + 0.5) / n], LSE_STEPS, eta, LSE_TOL);
      if (!path.converged) continue;
      const end = path.states[path.states.length - 1];
      let label = minima.findIndex(
        (mn) => Math.hypot(mn.point[0] - end[0], mn.point[1] - end[1]) < merge,
      );
      if (label < 0) {
        minima.push({ point: end, stored: nearestMemory(end, mem).distance < storedRadius });
        label = minima.length - 1;
      }
      labels[j * n + i] = label;
    }
  }
  return { n, labels, minima };
}
