/** The models of view 2 over stored digits: one descent step of each, with its readouts. */
import {
  descentStep,
  lseEnergyGrad,
  lsrFixedPointDirection,
  type Memories,
  maxChange,
  type Projections,
  rfEnergyGrad,
} from "../../lib/math";

export type Model = "lse" | "lsr" | "drdam";

export interface StepResult {
  next: Float64Array;
  /** energy at the state before the step */
  energy: number;
  gradNorm: number;
  moved: number;
}

export interface Stepper {
  /** energy at x, and per-memory weights (LSE: softmax; LSR: ReLU terms / Z; DrDAM: none) */
  evaluate(x: Float64Array): { energy: number; grad: Float64Array; weights: Float64Array | null };
  step(x: Float64Array, clamp: Uint8Array | null): StepResult;
}

/** LSE and DrDAM: gradient descent with step eta; LSR: its exact solver (centroid, step 1). */
export function makeStepper(
  model: Model,
  mem: Memories,
  beta: number,
  eta: number,
  drdam?: { proj: Projections; T: Float64Array },
): Stepper {
  const weights = new Float64Array(mem.m);
  const evaluate = (x: Float64Array) => {
    if (model === "lse") return { ...lseEnergyGrad(x, mem, beta, weights), weights };
    if (model === "lsr") {
      const r = lsrFixedPointDirection(x, mem, beta, 0, weights);
      if (r.z > 0) for (let mu = 0; mu < mem.m; mu++) weights[mu] /= r.z;
      return { ...r, weights };
    }
    if (!drdam) throw new Error("DrDAM needs its projections and tensor T");
    return { ...rfEnergyGrad(x, drdam.proj, drdam.T, beta), weights: null };
  };
  const stepSize = model === "lsr" ? 1 : eta;
  return {
    evaluate,
    step(x, clamp) {
      const { energy, grad } = evaluate(x);
      const next = descentStep(x, grad, stepSize, clamp ?? undefined);
      let g2 = 0;
      for (let k = 0; k < grad.length; k++) if (!clamp?.[k]) g2 += grad[k] * grad[k];
      return { next, energy, gradNorm: Math.sqrt(g2), moved: maxChange(next, x) };
    },
  };
}
