/**
 * The seeded generator against its known answers (rng.vectors.json), which
 * tests/test_diffusion_rng.py checks amlab.diffusion.rng against too: the same seed draws the
 * same numbers in the page and in Python (the gallery's start noise, the diffusion view's).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { normals, rng } from "./rng";

interface Case {
  seed: number;
  uint32: number[];
  normals: number[];
}
const { cases }: { cases: Case[] } = JSON.parse(readFileSync(new URL("rng.vectors.json", import.meta.url), "utf8"));

describe("rng (mulberry32) and normals (Box-Muller)", () => {
  it("covers the seeds that wrap: 2^32, beyond it, negative", () => {
    const seeds = cases.map((c) => c.seed);
    for (const s of [0, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, -1]) expect(seeds).toContain(s);
    expect(cases.some((c) => c.normals.length % 2 === 1)).toBe(true);
  });
  for (const c of cases) {
    it(`seed ${c.seed}: the uint32 outputs exactly, the normals to 1e-14`, () => {
      const u = rng(c.seed);
      expect(c.uint32.map(() => u() * 4294967296)).toEqual(c.uint32);
      const z = normals(c.normals.length, c.seed);
      expect(z.length).toBe(c.normals.length);
      z.forEach((v, i) => expect(Math.abs(v - c.normals[i]), `entry ${i}`).toBeLessThanOrEqual(1e-14));
    });
  }
  it("a seed is read modulo 2^32 (seed >>> 0)", () => {
    expect(Array.from(normals(5, 2 ** 32 + 5))).toEqual(Array.from(normals(5, 5)));
    expect(Array.from(normals(5, -1))).toEqual(Array.from(normals(5, 2 ** 32 - 1)));
  });
});
