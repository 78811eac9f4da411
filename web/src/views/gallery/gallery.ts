/**
 * The gallery view's data: a gallery's metadata.parquet read in the browser (hyparquet), the
 * filters, the map's colours and the link into the diffusion view. The files are those of
 * amlab.explain.gallery: metadata.parquet (the gallery's columns plus map_x, map_y: each
 * picture on the training set's first two principal axes), training.json, images/.
 */
import { parquetMetadata, parquetReadObjects, parquetSchema } from "hyparquet";
import type { FlowSampler } from "../../lib/math";
import { paramNumber } from "../../lib/route";
import { MAX_STEPS } from "../diffusion/diffusion";

/** the columns the view reads (amlab.explain.gallery.VIEW_COLUMNS and MAP_COLUMNS) */
export const VIEW_COLUMNS = [
  "image_name",
  "prompt",
  "part_id",
  "seed",
  "step",
  "cfg",
  "sampler",
  "width",
  "height",
  "nearest_train",
  "nearest_distance",
  "audit",
  "model_hash",
  "map_x",
  "map_y",
] as const;

export interface GalleryRow {
  image_name: string;
  prompt: string;
  part_id: number;
  seed: number;
  step: number;
  cfg: number;
  sampler: number;
  width: number;
  height: number;
  nearest_train: number;
  nearest_distance: number;
  audit: string;
  /** the hash of the model that drew it (amlab.io.model_hash) */
  model_hash: string;
  map_x: number;
  map_y: number;
}

/** The training set as training.json carries it: its map, and the images rows name nearest. */
export interface Training {
  count: number;
  /** the share of the variance each map axis explains */
  explained: [number, number];
  /** (count, 2) map coordinates, row-major */
  map: number[];
  /** each image's nearest training images, nearest first: [index, distance] (absent in a
   * training.json written before amlab listed them) */
  neighbours?: Record<string, [number, number][]>;
  labels: Record<string, number>;
  pixels: Record<string, number[]>;
}

/** DiffusionDB's sampler codes (amlab.tasks.gallery.SAMPLER_CODES) */
export const SAMPLER_NAMES: Record<number, string> = {
  1: "ddim",
  2: "plms",
  3: "k_euler",
  4: "k_euler_ancestral",
  5: "k_heun",
  6: "k_dpm_2",
  7: "k_dpm_2_ancestral",
  8: "k_lms",
  9: "others",
};

/** the audit's classes, in amlab.analysis.memorisation's order, and their colours */
export const AUDIT_COLOURS: Record<string, string> = {
  memorised: "#c53030",
  spurious: "#d69e2e",
  generalised: "#2b6cb0",
};

/** colours of the prompts (Tableau 10), the i-th distinct prompt in sorted order */
const PROMPT_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/**
 * The rows of a metadata.parquet, each with the view's columns; a file that is no parquet, or
 * lacks a column the view reads, throws an Error that says so (and names the columns).
 */
export async function readGallery(file: ArrayBuffer, name = "metadata.parquet"): Promise<GalleryRow[]> {
  let columns: string[];
  try {
    columns = parquetSchema(parquetMetadata(file)).children.map((c) => c.element.name);
  } catch (e) {
    throw new Error(`${name} is not a readable parquet file (${e instanceof Error ? e.message : e}).`);
  }
  const missing = VIEW_COLUMNS.filter((c) => !columns.includes(c));
  if (missing.length) {
    throw new Error(
      `${name} lacks the column(s) ${missing.join(", ")} that the gallery view reads; serve a ` +
        "gallery with amlab explain --gallery DIR (DIR from amlab gallery generate).",
    );
  }
  const rows = await parquetReadObjects({ file, columns: [...VIEW_COLUMNS] });
  return rows.map((r) => {
    for (const c of VIEW_COLUMNS) {
      if (r[c] === null || r[c] === undefined) throw new Error(`${name}: column ${c} has an empty value; the view needs every one.`);
    }
    return r as unknown as GalleryRow;
  });
}

export interface Filters {
  /** text the prompt contains (case-insensitive); "" keeps every prompt */
  prompt: string;
  /** null keeps every value */
  cfg: number | null;
  step: number | null;
  seed: number | null;
}

/** The indices of the rows that pass every filter. */
export function filterRows(rows: GalleryRow[], f: Filters): number[] {
  const text = f.prompt.trim().toLowerCase();
  const keep: number[] = [];
  rows.forEach((r, i) => {
    if (text && !r.prompt.toLowerCase().includes(text)) return;
    if (f.cfg !== null && r.cfg !== f.cfg) return;
    if (f.step !== null && r.step !== f.step) return;
    if (f.seed !== null && r.seed !== f.seed) return;
    keep.push(i);
  });
  return keep;
}

/** The distinct values of a column, ascending. */
export function distinct<K extends "cfg" | "step" | "seed" | "prompt">(rows: GalleryRow[], key: K): GalleryRow[K][] {
  return [...new Set(rows.map((r) => r[key]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The shortest decimal that reads back as the float32 x (what numpy prints for it). */
export function float32String(x: number): string {
  for (let digits = 1; digits <= 9; digits++) {
    const s = x.toPrecision(digits);
    if (Math.fround(Number(s)) === x) return String(Number(s));
  }
  return String(x);
}

/** the diffusion view's samplers by their DiffusionDB codes (amlab.tasks.gallery.SAMPLER_CODE) */
export const VIEW_SAMPLERS: Record<number, FlowSampler> = { 3: "euler", 5: "heun" };

/** The diffusion view at a row's prompt, seed, guidance, steps and sampler (where the view
 * has it). Seed s is the same start noise there as in the gallery (normals(D, s) times the
 * prior's scale, amlab.diffusion.rng), so a row of a sampler the view runs, at steps it runs,
 * opens on the row's image (see `unreproducible`). */
export function diffusionLink(r: GalleryRow): string {
  const method = VIEW_SAMPLERS[r.sampler];
  return (
    `#/diffusion?prompt=${encodeURIComponent(r.prompt)}&seed=${r.seed}` +
    `&guidance=${float32String(r.cfg)}&steps=${r.step}${method ? `&sampler=${method}` : ""}`
  );
}

/** Why the diffusion view cannot redraw a row's image ("" where it can): another model than
 * the view's (`viewModel`, its hash; null: not known, not checked), a sampler the view lacks
 * (amlab's other one, Euler-Maruyama, draws noise from torch's generator at every step; the
 * view runs only the probability-flow ODE), or more steps than the view runs. */
export function unreproducible(r: GalleryRow, viewModel: string | null): string {
  const why: string[] = [];
  if (viewModel !== null && r.model_hash !== viewModel) {
    why.push(`it was drawn by the model ${r.model_hash} and the view runs the shipped text model ${viewModel}`);
  }
  if (!VIEW_SAMPLERS[r.sampler]) {
    const drawn =
      r.sampler === 9
        ? "Euler-Maruyama (code 9, others), which adds fresh noise from torch's generator at every step"
        : `${SAMPLER_NAMES[r.sampler] ?? `sampler code ${r.sampler}`}, which the view does not run`;
    why.push(`it was drawn by ${drawn}; the view runs only Heun and Euler, so it starts from this image's noise but runs Heun`);
  }
  if (r.step > MAX_STEPS) why.push(`it was drawn in ${r.step} steps and the view runs at most ${MAX_STEPS}`);
  return why.join("; ");
}

/** A row's picture under the gallery's folder (DiffusionDB's layout). */
export function imagePath(r: GalleryRow): string {
  return `images/part-${String(r.part_id).padStart(6, "0")}/${r.image_name}`;
}

export type ColourBy = "audit" | "prompt";

/** Each row's colour: its audit class's, or its prompt's (by the prompt's place among the
 * distinct prompts; the palette repeats after ten). */
export function rowColours(rows: GalleryRow[], by: ColourBy): string[] {
  if (by === "audit") return rows.map((r) => AUDIT_COLOURS[r.audit] ?? "#718096");
  const prompts = distinct(rows, "prompt");
  return rows.map((r) => PROMPT_COLOURS[prompts.indexOf(r.prompt) % PROMPT_COLOURS.length]);
}

/** The legend of a colouring: (label, colour) pairs. */
export function legend(rows: GalleryRow[], by: ColourBy): [string, string][] {
  if (by === "audit") {
    const present = new Set(rows.map((r) => r.audit));
    return Object.entries(AUDIT_COLOURS).filter(([k]) => present.has(k));
  }
  return distinct(rows, "prompt").map((p, i) => [p, PROMPT_COLOURS[i % PROMPT_COLOURS.length]]);
}

/** The filters a route's params name (absent or unreadable ones keep every row). */
export function filtersFromParams(params: URLSearchParams): Filters {
  const num = (key: string) => {
    const v = paramNumber(params, key, NaN);
    return Number.isNaN(v) ? null : v;
  };
  const cfg = num("cfg"); // a float32 column: 2.2 in the route is the float32 nearest 2.2
  return { prompt: params.get("q") ?? "", cfg: cfg === null ? null : Math.fround(cfg), step: num("steps"), seed: num("seed") };
}

/** The filters with each guidance, steps or seed value that no row has (a stale or mistyped
 * route) dropped: the view's selects offer only the gallery's values, so a filter on another
 * would hide every image behind a blank select. */
export function knownFilters(rows: GalleryRow[], f: Filters): Filters {
  const known = (key: "cfg" | "step" | "seed") => (rows.some((r) => r[key] === f[key]) ? f[key] : null);
  return { prompt: f.prompt, cfg: known("cfg"), step: known("step"), seed: known("seed") };
}

/** The route params of filters, the colouring and the selected image. */
export function paramsOf(f: Filters, by: ColourBy, selected: string | null): URLSearchParams {
  const p = new URLSearchParams();
  if (f.prompt) p.set("q", f.prompt);
  if (f.cfg !== null) p.set("cfg", float32String(f.cfg));
  if (f.step !== null) p.set("steps", String(f.step));
  if (f.seed !== null) p.set("seed", String(f.seed));
  if (by !== "audit") p.set("colour", by);
  if (selected) p.set("image", selected);
  return p;
}

/** An image's next nearest training images (after the nearest), with their distances, labels
 * and pixels; none where training.json lists no neighbours (a gallery written before it did). */
export function nextNearest(training: Training, name: string) {
  return (training.neighbours?.[name] ?? []).slice(1).map(([index, distance]) => ({
    index,
    distance,
    label: training.labels[String(index)] as number | undefined,
    pixels: training.pixels[String(index)] ?? null,
  }));
}

/** The smallest and largest of `values` (a loop: spreading a large array into Math.min
 * overflows the call stack at around 10^5 values). [Infinity, -Infinity] when empty. */
export function extent(values: Iterable<number>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}
