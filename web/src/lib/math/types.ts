/** Memories (M, D) stored row-major in one flat array, as the Python side stores them. */
export interface Memories {
  data: Float64Array;
  m: number;
  d: number;
}

/** Energy at x and a descent direction (the gradient, or LSR's rescaled centroid step). */
export interface EnergyGrad {
  energy: number;
  grad: Float64Array;
}

export function memories(rows: ArrayLike<number>[] | Float64Array, d?: number): Memories {
  if (rows instanceof Float64Array) {
    if (!d) throw new Error("memories: pass d for a flat array");
    return { data: rows, m: rows.length / d, d };
  }
  const m = rows.length;
  const dim = m ? rows[0].length : (d ?? 0);
  const data = new Float64Array(m * dim);
  rows.forEach((row, i) => data.set(row, i * dim));
  return { data, m, d: dim };
}

/** Memory mu (D,): a view into `data`. */
export function row(mem: Memories, mu: number): Float64Array {
  return mem.data.subarray(mu * mem.d, (mu + 1) * mem.d);
}

/** ||x - xi_mu||^2 by direct differences. */
export function sqDistance(x: ArrayLike<number>, mem: Memories, mu: number): number {
  const { data, d } = mem;
  const off = mu * d;
  let s = 0;
  for (let k = 0; k < d; k++) {
    const diff = x[k] - data[off + k];
    s += diff * diff;
  }
  return s;
}

/** The memory nearest to x (the first of equals) and its distance; index -1 if there are none. */
export function nearestMemory(
  x: ArrayLike<number>,
  mem: Memories,
): { index: number; distance: number } {
  let index = -1;
  let best = Infinity;
  for (let mu = 0; mu < mem.m; mu++) {
    const d2 = sqDistance(x, mem, mu);
    if (d2 < best) {
      best = d2;
      index = mu;
    }
  }
  return { index, distance: Math.sqrt(best) };
}
