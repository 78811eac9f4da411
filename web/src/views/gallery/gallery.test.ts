/**
 * The gallery view's parquet reading, filters and links against the Python package: the
 * shipped gallery's metadata.parquet (copied into public/data by `amlab export`) read here by
 * hyparquet equals what pyarrow read (`amlab export --vectors`), the filters keep the rows
 * pyarrow's compute kernels keep, and float32 guidance prints as numpy prints it.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  diffusionLink,
  extent,
  filterRows,
  filtersFromParams,
  float32String,
  type GalleryRow,
  imagePath,
  knownFilters,
  legend,
  nextNearest,
  paramsOf,
  readGallery,
  rowColours,
  type Training,
  unreproducible,
  VIEW_COLUMNS,
} from "./gallery";

interface Vectors {
  gallery: {
    file: string;
    columns: Record<string, (string | number)[]>;
    filters: { prompt: string; cfg: number | null; step: number | null; seed: number | null; rows: number[] }[];
    float32: [number, string][];
  };
}
const vectors: Vectors = JSON.parse(readFileSync("test-vectors/vectors.json", "utf8"));
const want = vectors.gallery;

function buffer(path: string): ArrayBuffer {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

const rows = await readGallery(buffer(`public/data/${want.file}`));

describe("readGallery", () => {
  it("reads the columns amlab.explain.gallery names", () => {
    expect(Object.keys(want.columns)).toEqual([...VIEW_COLUMNS]);
  });

  it("reads every row and column as pyarrow does", () => {
    expect(rows.length).toBe(want.columns.prompt.length);
    expect(rows.length).toBeGreaterThan(100);
    for (const c of VIEW_COLUMNS) {
      expect(rows.map((r) => r[c as keyof GalleryRow]), c).toEqual(want.columns[c]);
    }
  });

  it("refuses a file that is no parquet", async () => {
    await expect(readGallery(new TextEncoder().encode("not a parquet file at all").buffer as ArrayBuffer, "x.parquet"))
      .rejects.toThrow(/x.parquet is not a readable parquet file/);
  });

  it("refuses a truncated parquet", async () => {
    const whole = buffer(`public/data/${want.file}`);
    await expect(readGallery(whole.slice(0, whole.byteLength - 100))).rejects.toThrow(/not a readable parquet/);
  });
});

describe("filters", () => {
  it("keep the rows pyarrow keeps", () => {
    expect(want.filters.some((f) => f.rows.length === 0)).toBe(true);
    expect(want.filters.some((f) => f.rows.length > 0 && f.rows.length < rows.length)).toBe(true);
    for (const f of want.filters) expect(filterRows(rows, f), JSON.stringify(f)).toEqual(f.rows);
  });

  it("round-trip through the route", () => {
    const f = { prompt: "thick 9", cfg: Math.fround(2.2), step: 30, seed: 3 };
    const back = filtersFromParams(paramsOf(f, "prompt", "x.png"));
    expect(back).toEqual(f);
    expect(filtersFromParams(new URLSearchParams("cfg=abc&steps="))).toEqual({ prompt: "", cfg: null, step: null, seed: null });
  });

  it("drop the route's values that no row has, keeping those some row has", () => {
    const [r] = rows;
    const have = { prompt: "THICK", cfg: r.cfg, step: r.step, seed: r.seed };
    expect(knownFilters(rows, have)).toEqual(have);
    const lacking = { prompt: "no such prompt", cfg: Math.fround(123.5), step: 100001, seed: -7 };
    expect(knownFilters(rows, lacking)).toEqual({ prompt: "no such prompt", cfg: null, step: null, seed: null });
    expect(knownFilters(rows, { ...have, seed: -7 })).toEqual({ ...have, seed: null });
  });
});

describe("links and labels", () => {
  /** the diffusion view's model: the one that drew the shipped gallery */
  const view = rows[0].model_hash;
  it("print float32 guidance as numpy's shortest decimal", () => {
    for (const [value, numpy] of want.float32) {
      const s = float32String(value);
      expect(Number(s), numpy).toBe(Number(numpy));
      expect(Math.fround(Number(s))).toBe(value);
    }
  });

  it("open the diffusion view at the row's prompt, seed, guidance, steps and sampler", () => {
    const r = { ...rows[0], prompt: "a thin slanted 7", seed: 4000000000, cfg: Math.fround(2.2), step: 30, sampler: 5 };
    const link = diffusionLink(r);
    expect(link).toBe("#/diffusion?prompt=a%20thin%20slanted%207&seed=4000000000&guidance=2.2&steps=30&sampler=heun");
    const params = new URLSearchParams(link.split("?")[1]);
    expect(params.get("prompt")).toBe("a thin slanted 7");
    expect(Math.fround(Number(params.get("guidance")))).toBe(r.cfg);
    expect(unreproducible(r, view)).toBe("");
    expect(diffusionLink({ ...r, sampler: 3 })).toMatch(/&steps=30&sampler=euler$/);
    expect(unreproducible({ ...r, sampler: 3 }, view)).toBe("");
  });

  it("say that the diffusion view cannot redraw a row of another model than its own", () => {
    const r = { ...rows[0], step: 30, sampler: 5 };
    expect(unreproducible(r, r.model_hash)).toBe("");
    expect(unreproducible(r, null)).toBe(""); // the view's model not known: not checked
    expect(unreproducible(r, "0123456789abcdef")).toBe(
      `it was drawn by the model ${r.model_hash} and the view runs the shipped text model 0123456789abcdef`,
    );
    expect(unreproducible({ ...r, step: 201 }, "0123456789abcdef")).toMatch(/shipped text model 0123456789abcdef; it was drawn in 201 steps/);
  });

  it("say where the diffusion view cannot redraw a row, and pass no sampler it lacks", () => {
    const r = { ...rows[0], step: 30, sampler: 9 }; // amlab's Euler-Maruyama
    expect(diffusionLink(r)).toMatch(/&steps=30$/);
    expect(unreproducible(r, view)).toMatch(/^it was drawn by Euler-Maruyama .* fresh noise from torch's generator at every step; .* runs Heun$/);
    expect(unreproducible({ ...r, sampler: 1 }, view)).toMatch(/^it was drawn by ddim, which the view does not run; .* runs Heun$/);
    expect(unreproducible({ ...r, sampler: 42 }, view)).toMatch(/^it was drawn by sampler code 42, which the view does not run; /);
    expect(unreproducible({ ...r, sampler: 5, step: 201 }, view)).toBe("it was drawn in 201 steps and the view runs at most 200");
    expect(unreproducible({ ...r, sampler: 5, step: 200 }, view)).toBe("");
    expect(unreproducible({ ...r, step: 500 }, view)).toMatch(/ runs Heun; it was drawn in 500 steps and the view runs at most 200$/);
  });

  it("find the pictures in DiffusionDB's layout", () => {
    expect(imagePath({ ...rows[0], part_id: 12, image_name: "x.png" })).toBe("images/part-000012/x.png");
  });

  it("colour every row and name every colour in the legend", () => {
    for (const by of ["audit", "prompt"] as const) {
      const colours = rowColours(rows, by);
      const keys = new Map(legend(rows, by).map(([label, colour]) => [label, colour]));
      rows.forEach((r, i) => expect(keys.get(by === "audit" ? r.audit : r.prompt)).toBe(colours[i]));
    }
  });
});

describe("extent", () => {
  it("is the smallest and largest value, for more values than Math.min(...xs) can take", () => {
    const xs = Array.from({ length: 300_000 }, (_, i) => Math.sin(i) * (1 + i / 1e5));
    expect(() => Math.min(...xs)).toThrow(RangeError);
    const sorted = [...xs].sort((a, b) => a - b);
    expect(extent(xs)).toEqual([sorted[0], sorted[sorted.length - 1]]);
    expect(extent([])).toEqual([Infinity, -Infinity]);
  });
});

describe("nextNearest", () => {
  const training: Training = JSON.parse(readFileSync("public/data/gallery/training.json", "utf8"));
  const name = rows[0].image_name;

  it("is training.json's neighbours after the nearest, with their labels and pixels", () => {
    const listed = training.neighbours![name];
    expect(listed.length).toBeGreaterThan(1);
    expect(listed[0][0]).toBe(rows[0].nearest_train);
    expect(nextNearest(training, name)).toEqual(
      listed.slice(1).map(([index, distance]) => ({
        index,
        distance,
        label: training.labels[String(index)],
        pixels: training.pixels[String(index)],
      })),
    );
  });

  it("is none, not an error, for a training.json without neighbours (a gallery written before them)", () => {
    const { neighbours: _, ...older } = training;
    expect(nextNearest(older, name)).toEqual([]);
    expect(nextNearest(training, "no-such.png")).toEqual([]);
  });
});
