/**
 * The app's math against vectors computed by the Python package (`amlab export --vectors`):
 * energies, gradients, one descent step, LSR minima and DrDAM features, the diffusion
 * schedules, the empirical denoiser and its sampler, to float32 tolerance.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  descend,
  descentStep,
  featureSums,
  featureTensor,
  features,
  lseEnergyGrad,
  lsrEnergyGrad,
  lsrMinima,
  memories,
  nearestMemory,
  rfEnergyGrad,
} from "./index";
import {
  empiricalDenoise,
  empiricalDenoiser,
  flowVelocity,
  makeSchedule,
  noiseLevel,
  priorScale,
  project,
  sampleFlow,
  sampleTimes,
} from "./diffusion";

const path = new URL("../../../test-vectors/vectors.json", import.meta.url);
const vectors = JSON.parse(readFileSync(path, "utf8"));

/** |a - b| <= atol + rtol |b| entrywise (float32 tolerance). */
function close(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6) {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < b.length; i++) {
    const err = Math.abs(a[i] - b[i]);
    if (!(err <= atol + rtol * Math.abs(b[i]))) {
      throw new Error(`entry ${i}: ${a[i]} vs ${b[i]} (error ${err})`);
    }
  }
}

describe("nearest memory", () => {
  it("is the first memory at the smallest distance, by brute force over the rows", () => {
    for (const c of vectors.lse) {
      const rows: number[][] = c.memories;
      c.x.forEach((x: number[]) => {
        const dist = rows.map((r) => Math.hypot(...r.map((v, k) => v - x[k])));
        const best = Math.min(...dist);
        const found = nearestMemory(x, memories(rows));
        expect(found.index).toBe(dist.indexOf(best));
        close([found.distance], [best], 1e-12, 0);
      });
    }
    const tie = memories([[1, 0], [0, 1], [0, 0.5], [0, 0.5]]);
    expect(nearestMemory([0.1, 0.5], tie)).toEqual({ index: 2, distance: Math.sqrt(0.1 * 0.1) });
    expect(nearestMemory([0, 0], memories([], 2))).toEqual({ index: -1, distance: Infinity });
  });
});

describe("LSE energy", () => {
  for (const [n, c] of vectors.lse.entries()) {
    it(`case ${n}: energy, gradient, gd step, attention step (M=${c.memories.length})`, () => {
      const mem = memories(c.memories);
      c.x.forEach((x: number[], i: number) => {
        const { energy, grad } = lseEnergyGrad(x, mem, c.beta);
        close([energy], [c.energy[i]]);
        close(grad, c.grad[i]);
        close(descentStep(x, grad, c.gd_step_size), c.gd_next[i]);
        close(descentStep(x, grad, 1), c.attention_next[i]);
      });
    });
  }
});

describe("LSE energy, dot form", () => {
  it("differs from the distance form by ||xi||^2 / 2 when every memory has that norm", () => {
    // exp(beta x.xi - beta |xi|^2 / 2) = exp(-beta |x - xi|^2 / 2) exp(beta |x|^2 / 2)
    const rows = [[0.6, 0.8, 0], [0, 0.6, -0.8], [-1, 0, 0], [0, 0, 1]].map((r) => r.map((v) => 2 * v));
    const mem = memories(rows); // every |xi|^2 = 4
    for (const x of [[0.3, -0.2, 0.5], [2, 1, 0], [-0.1, 0, 0.05]]) {
      const dist = lseEnergyGrad(x, mem, 1.7);
      const dot = lseEnergyGrad(x, mem, 1.7, undefined, "dot");
      close([dot.energy], [dist.energy - 2], 1e-12, 1e-12);
      close(dot.grad, Array.from(dist.grad), 1e-12, 1e-12);
    }
  });
});

describe("LSR energy", () => {
  for (const [n, c] of vectors.lsr.entries()) {
    it(`case ${n}: energy, gradient, gd step, fixed-point step (M=${c.memories.length})`, () => {
      const mem = memories(c.memories);
      c.x.forEach((x: number[], i: number) => {
        const { energy, grad } = lsrEnergyGrad(x, mem, c.beta);
        if (c.energy[i] === null) expect(energy).toBe(Infinity);
        else close([energy], [c.energy[i]]);
        close(grad, c.grad[i]);
        close(descentStep(x, grad, c.gd_step_size), c.gd_next[i]);
        const fixed = lsrEnergyGrad(x, mem, c.beta, { fixedPoint: true });
        close(descentStep(x, fixed.grad, 1), c.fixed_point_next[i]);
      });
    });
  }
  for (const [n, c] of vectors.lsr.entries()) {
    it(`case ${n}: the exact solver stops where amlab's does, after as many steps`, () => {
      const mem = memories(c.memories);
      c.x.forEach((x: number[], i: number) => {
        const path = descend((s) => lsrEnergyGrad(s, mem, c.beta, { fixedPoint: true }), x, 100, 1, 0);
        expect(path.states.length - 1).toBe(c.fixed_point_steps[i]);
        close(path.states[path.states.length - 1], c.fixed_point_end[i]);
      });
    });
  }
  it("has cases inside and outside the supports", () => {
    const all = vectors.lsr.flatMap((c: { energy: (number | null)[] }) => c.energy);
    expect(all.some((e: number | null) => e === null)).toBe(true);
    expect(all.some((e: number | null) => e !== null)).toBe(true);
  });
});

describe("LSR minima", () => {
  for (const [n, c] of vectors.lsr_minima.entries()) {
    it(`case ${n}: same minima as amlab.analysis.lsr_minima (M=${c.memories.length})`, () => {
      const found = lsrMinima(memories(c.memories), c.beta);
      expect(found.stored).toBe(c.stored);
      expect(found.emergent).toBe(c.emergent);
      const key = (s: number[]) => [...s].sort((a, b) => a - b).join(",");
      const ours = new Map(found.minima.map((mn) => [key(mn.support), mn.point]));
      expect(ours.size).toBe(c.supports.length);
      c.supports.forEach((s: number[], i: number) => {
        const point = ours.get(key(s));
        expect(point, `support {${s}}`).toBeDefined();
        close(point as Float64Array, c.points[i]);
      });
    });
  }
  it("the cases hold emergent minima", () => {
    expect(vectors.lsr_minima.some((c: { emergent: number }) => c.emergent > 0)).toBe(true);
  });
});

describe("DrDAM (sincos random features)", () => {
  for (const [n, c] of vectors.drdam.entries()) {
    it(`case ${n}: features, T, energy, gradient, gd step (Y=${c.S.length})`, () => {
      const proj = { S: Float64Array.from(c.S.flat()), rows: c.S.length, d: c.S[0].length };
      const y = proj.rows;
      const T = featureTensor(featureSums(memories(c.memories), proj, y, c.beta), y);
      close(T, c.T, 1e-5, 1e-5);
      c.x.forEach((x: number[], i: number) => {
        close(features(x, proj, y, c.beta), c.features[i]);
        const { energy, grad } = rfEnergyGrad(x, proj, T, c.beta, c.eps);
        close([energy], [c.energy[i]]);
        close(grad, c.grad[i], 1e-5, 1e-5);
        close(descentStep(x, grad, c.gd_step_size), c.gd_next[i], 1e-5, 1e-5);
      });
    });
  }
  it("T of the first Y' projections is a rescaled prefix of the sums", () => {
    const c = vectors.drdam[1];
    const proj = { S: Float64Array.from(c.S.flat()), rows: c.S.length, d: c.S[0].length };
    const mem = memories(c.memories);
    const half = proj.rows / 2;
    const direct = featureTensor(featureSums(mem, proj, half, c.beta), half);
    close(featureTensor(featureSums(mem, proj, proj.rows, c.beta), half), direct, 1e-12, 1e-12);
  });
});

describe("diffusion (amlab.diffusion)", () => {
  const d = vectors.diffusion;
  for (const c of d.schedules) {
    it(`${c.config.name} schedule: times, alpha, sigma, s_t, f, g^2, prior scale`, () => {
      const sched = makeSchedule(c.config);
      const times = sampleTimes(sched, c.steps);
      close(times, c.times, 1e-12, 1e-15);
      close(times.map(sched.alpha), c.alpha);
      close(times.map(sched.sigma), c.sigma);
      close(times.map((t) => noiseLevel(sched, t)), c.noise_level);
      close(times.map(sched.drift), c.drift);
      close(times.map(sched.diffusionSq), c.diffusion_sq);
      close([priorScale(sched)], [c.prior_scale]);
    });
  }
  for (const [n, c] of d.empirical.entries()) {
    it(`case ${n}: the empirical denoiser and its energy E_t (K=${c.memories.length})`, () => {
      const mem = memories(c.memories);
      for (const level of c.levels) {
        c.y.forEach((y: number[], i: number) => {
          const { denoised, energy, weights } = empiricalDenoise(y, mem, level.s);
          close(denoised, level.denoised[i]);
          close([energy], [level.energy[i]]);
          close([weights.reduce((a, b) => a + b, 0)], [1], 1e-12, 1e-12);
        });
      }
    });
  }
  for (const [n, c] of d.sampler.entries()) {
    it(`case ${n}: the ${c.method} sampler with the empirical denoiser (${c.schedule.name}, ${c.steps} steps)`, async () => {
      const sched = makeSchedule(c.schedule);
      const mem = memories(c.memories);
      let calls = 0;
      const empirical = empiricalDenoiser(sched, c.start.map(() => mem));
      const denoise = (x: Float64Array[], t: number) => {
        calls++;
        return empirical(x, t);
      };
      const start = c.start.map((row: number[]) => Float64Array.from(row));
      const run = await sampleFlow(sched, start, c.steps, c.method, denoise);
      expect(calls).toBe(2 * c.steps + 1);
      run.states.forEach((rows, k) => rows.forEach((row, i) => close(row, c.path[k][i])));
      run.denoised[c.steps].forEach((row, i) => close(row, c.final[i]));
    });
  }
  it("VE: the flow's velocity is log(sigma_max / sigma_min) (x - D(x))", () => {
    const sched = makeSchedule({ name: "ve", sigma_min: 0.01, sigma_max: 10 });
    const x = [1, -2, 0.5];
    const D = [0.2, 0.1, 0.4];
    const v = flowVelocity(sched, x, D, 0.7);
    close(v, x.map((xi, k) => Math.log(1000) * (xi - D[k])), 1e-12, 1e-12);
  });
  it("projects onto the digits' principal axes as numpy does", () => {
    d.pca.x.forEach((x: number[], i: number) => close(project(x, d.pca), d.pca.coords[i]));
  });
});
