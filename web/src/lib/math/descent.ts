/** One step of the descent engine (amlab.dynamics.descend): x <- x - h * direction. */
export function descentStep(
  x: ArrayLike<number>,
  direction: ArrayLike<number>,
  stepSize: number,
  clamp?: ArrayLike<boolean | number>,
): Float64Array {
  const next = new Float64Array(x.length);
  for (let k = 0; k < x.length; k++) {
    next[k] = clamp && clamp[k] ? x[k] : x[k] - stepSize * direction[k];
  }
  return next;
}

/** Largest |change| of an entry between two states (the engine's convergence test). */
export function maxChange(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k] - b[k]));
  return m;
}

export interface Path {
  states: Float64Array[];
  energies: number[];
  converged: boolean;
}

/** Run up to `steps` steps; stop when no entry moves more than `tol` (as descend does). */
export function descend(
  oracle: (x: Float64Array) => { energy: number; grad: Float64Array },
  x0: ArrayLike<number>,
  steps: number,
  stepSize: number,
  tol: number,
  clamp?: ArrayLike<boolean | number>,
): Path {
  let x: Float64Array = Float64Array.from(x0);
  let { energy, grad } = oracle(x);
  const states = [x];
  const energies = [energy];
  for (let t = 0; t < steps; t++) {
    const next = descentStep(x, grad, stepSize, clamp);
    const moved = maxChange(next, x);
    x = next;
    ({ energy, grad } = oracle(x));
    states.push(x);
    energies.push(energy);
    if (moved <= tol) return { states, energies, converged: Number.isFinite(energy) };
  }
  return { states, energies, converged: false };
}
