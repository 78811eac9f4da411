/** The models of view 2 over stored digits: the oracle each descends with, and its step. */
import {
  lseEnergyGrad,
  lsrEnergyGrad,
  type Memories,
  type Projections,
  rfEnergyGrad,
} from "../../lib/math";

export type Model = "lse" | "lsr" | "drdam";

export interface Evaluation {
  energy: number;
  /** the descent direction: the gradient (LSE, DrDAM), or x - centroid of the active set (LSR) */
  grad: Float64Array;
  /** weight of each memory (LSE: softmax; LSR: ReLU term / Z); DrDAM keeps none */
  weights: Float64Array | null;
}

export interface ModelStep {
  evaluate(x: Float64Array): Evaluation;
  /** LSE and DrDAM: gradient descent with step eta; LSR: its exact solver, step 1 */
  stepSize: number;
}

export function makeModel(
  model: Model,
  mem: Memories,
  beta: number,
  eta: number,
  drdam?: { proj: Projections; T: Float64Array },
): ModelStep {
  const evaluate = (x: Float64Array): Evaluation => {
    if (model === "lse") {
      const weights = new Float64Array(mem.m);
      return { ...lseEnergyGrad(x, mem, beta, weights), weights };
    }
    if (model === "lsr") {
      const weights = new Float64Array(mem.m);
      const r = lsrEnergyGrad(x, mem, beta, { weights, fixedPoint: true });
      if (r.z > 0) for (let mu = 0; mu < mem.m; mu++) weights[mu] /= r.z;
      return { energy: r.energy, grad: r.grad, weights };
    }
    if (!drdam) throw new Error("DrDAM needs its projections and tensor T");
    const r = rfEnergyGrad(x, drdam.proj, drdam.T, beta);
    return { energy: r.energy, grad: r.grad, weights: null };
  };
  return { evaluate, stepSize: model === "lsr" ? 1 : eta };
}
