/**
 * Every local minimum of the LSR energy (eps = 0), exactly: the enumeration of
 * amlab.analysis.minima.lsr_minima. A set S of memories gives a minimum iff, with c its
 * centroid and r^2 = 2/beta,
 *   q_S = max_{mu in S} ||c - xi_mu||^2  <  r^2  <=  p_S = min_{nu not in S} ||c - xi_nu||^2.
 * Members of such a set lie pairwise within 2r, so only the cliques of the graph joining
 * memories closer than 2r are walked (each once, members added in increasing index order).
 */
import { type Memories, row, sqDistance } from "./types";

export interface LsrMinimum {
  point: Float64Array;
  support: number[];
  stored: boolean;
}

export interface LsrMinimaResult {
  minima: LsrMinimum[];
  stored: number;
  emergent: number;
  /** cliques examined */
  cliques: number;
}

export class TooManyCliques extends Error {}

export function lsrMinima(mem: Memories, beta: number, maxCliques = 1 << 22): LsrMinimaResult {
  const { m, d, data } = mem;
  const r2 = 2 / beta;
  const adjacent: boolean[][] = [];
  for (let a = 0; a < m; a++) {
    adjacent.push([]);
    for (let b = 0; b < m; b++) {
      adjacent[a].push(a !== b && sqDistance(row(mem, a), mem, b) < 4 * r2);
    }
  }
  const minima: LsrMinimum[] = [];
  const members: number[] = [];
  const sums = new Float64Array(d);
  const centroid = new Float64Array(d);
  const isMember = new Uint8Array(m);
  let cliques = 0;

  const check = () => {
    const n = members.length;
    for (let k = 0; k < d; k++) centroid[k] = sums[k] / n;
    let q = -1;
    let p = Infinity;
    for (let mu = 0; mu < m; mu++) {
      const d2 = sqDistance(centroid, mem, mu);
      if (isMember[mu]) q = Math.max(q, d2);
      else p = Math.min(p, d2);
    }
    if (q < r2 && p >= r2) {
      minima.push({ point: Float64Array.from(centroid), support: [...members], stored: n === 1 });
    }
  };

  // depth-first: grow the clique `members` by candidates adjacent to all members, larger index
  const grow = (candidates: number[]) => {
    if (++cliques > maxCliques) {
      throw new TooManyCliques(`more than ${maxCliques} cliques: raise beta or remove memories`);
    }
    check();
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[i];
      members.push(c);
      isMember[c] = 1;
      for (let k = 0; k < d; k++) sums[k] += data[c * d + k];
      grow(candidates.slice(i + 1).filter((o) => adjacent[c][o]));
      for (let k = 0; k < d; k++) sums[k] -= data[c * d + k];
      isMember[c] = 0;
      members.pop();
    }
  };

  for (let a = 0; a < m; a++) {
    members.push(a);
    isMember[a] = 1;
    for (let k = 0; k < d; k++) sums[k] = data[a * d + k];
    const candidates: number[] = [];
    for (let b = a + 1; b < m; b++) if (adjacent[a][b]) candidates.push(b);
    grow(candidates);
    isMember[a] = 0;
    members.pop();
  }
  const stored = minima.filter((x) => x.stored).length;
  return { minima, stored, emergent: minima.length - stored, cliques };
}
