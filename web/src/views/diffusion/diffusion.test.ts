/**
 * The diffusion view's text prompts against the Python package (`amlab export --vectors` and
 * the app data `amlab export` writes into public/data/): prompts read as amlab.data.captions
 * reads them, and the shipped text model run by ONNX Runtime (its wasm backend, as in the
 * page) through the view's denoiser: one guided step, then a whole guided Heun run, against
 * TextConvDenoiser (float32 tolerance).
 */
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-web";
import { describe, expect, it } from "vitest";
import { parsePrompt, promptWords } from "../../lib/captions";
import type { Digits, TextDiffusionInfo } from "../../lib/data";
import { makeSchedule, sampleFlow } from "../../lib/math";
import { learnedDenoiser, promptMemory } from "./diffusion";

const web = new URL("../../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("test-vectors/vectors.json", web), "utf8"));
const manifest = JSON.parse(readFileSync(new URL("public/data/manifest.json", web), "utf8"));
const info: TextDiffusionInfo = manifest.diffusion_text;

/** |a - b| <= atol + rtol |b| entrywise. */
function near(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number) {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < b.length; i++) {
    const err = Math.abs(a[i] - b[i]);
    if (!(err <= atol + rtol * Math.abs(b[i]))) throw new Error(`entry ${i}: ${a[i]} vs ${b[i]} (error ${err})`);
  }
}

describe("prompts (amlab.data.captions)", () => {
  const { cases, ...words } = vectors.diffusion.prompts;
  it("the manifest's words are the ones the vectors were made with", () => {
    expect(info.vocabulary).toEqual(words.vocabulary);
    expect((info.config as unknown as { vocabulary: string[] }).vocabulary).toEqual(words.vocabulary);
    expect(info.attribute_words).toEqual(words.attribute_words);
    expect(info.class_words).toEqual(words.class_words);
  });
  for (const c of cases) {
    it(`${JSON.stringify(c.prompt)}: ${c.unknown.length ? `unknown ${c.unknown.join(", ")}` : `ids ${c.ids}`}`, () => {
      const parsed = parsePrompt(c.prompt, words);
      if (c.unknown.length || c.request === null) {
        // refused, as amlab.data.captions.words (unknown words) or request (a conflict) is
        expect(parsed.ok).toBe(false);
        if (!parsed.ok) expect([parsed.unknown, parsed.problem.length > 0]).toEqual([c.unknown, true]);
        return;
      }
      expect(parsed).toEqual({ ok: true, words: promptWords(c.prompt), ids: c.ids, request: c.request });
    });
  }
  it("the digits' captions are prompts of known words asking for one digit each", () => {
    info.captions.forEach((caption, i) => {
      const parsed = parsePrompt(caption, info);
      if (!parsed.ok) throw new Error(`caption ${i} ${JSON.stringify(caption)} does not parse`);
      expect(parsed.request.digit).not.toBeNull();
    });
  });
  it("a prompt's memory is the digits of its caption, else those of its class", () => {
    const labels = [7, 7, 2, 7];
    const digits: Digits = { images: Float64Array.from({ length: 4 * 64 }, (_, i) => i), labels, count: 4, dim: 64, shape: [8, 8] };
    const captions = ["a thick 7", "a thick 7", "a thick 2", "a thin 7"];
    const requests = captions.map((c) => {
      const p = parsePrompt(c, info);
      return p.ok ? p.request : null;
    });
    const ask = (prompt: string) => {
      const p = parsePrompt(prompt, info);
      if (!p.ok) throw new Error(prompt);
      return promptMemory(digits, requests, p.request);
    };
    expect([ask("7 thick A").index, ask("7 thick A").exact]).toEqual([[0, 1], true]);
    expect(Array.from(ask("7 thick A").data.subarray(64, 66))).toEqual([64, 65]);
    expect([ask("a slanted 7").index, ask("a slanted 7").exact]).toEqual([[0, 1, 3], false]);
    expect([ask("a slanted").index, ask("a slanted").exact]).toEqual([[0, 1, 2, 3], false]);
  });
});

describe("the text model in ONNX Runtime (amlab.diffusion.TextConvDenoiser)", async () => {
  const run = vectors.diffusion.text_run;
  ort.env.wasm.numThreads = 1;
  const bytes = new Uint8Array(readFileSync(new URL(`public/data/${info.file}`, web)));
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  const schedule = makeSchedule(run.schedule);
  const denoiser = learnedDenoiser(info, session, ort.Tensor, schedule);
  const ids = run.prompts.map((p: string) => {
    const parsed = parsePrompt(p, info);
    if (!parsed.ok) throw new Error(p);
    return parsed.ids;
  });
  const start = run.start.map((row: number[]) => Float64Array.from(row));

  it("tokenises the prompts as Python did (its rows padded with -1)", () => {
    ids.forEach((row: number[], i: number) => {
      const padded = [...row, ...Array(run.tokens[i].length - row.length).fill(-1)];
      expect(padded).toEqual(run.tokens[i]);
    });
  });
  it("one guided step: the conditional, unconditional and guided D at the start", async () => {
    const out = await denoiser.denoise(start, 1, ids, run.guidance);
    out.cond.forEach((row, i) => near(row, run.cond[i], 1e-5, 1e-5));
    out.uncond.forEach((row, i) => near(row, run.uncond[i], 1e-5, 1e-5));
    out.guided.forEach((row, i) => near(row, run.guided[i], 1e-5, 2e-5));
  });
  it(`the guided Heun run of ${run.steps} steps and its final denoising step`, async () => {
    const traj = await sampleFlow(schedule, start, run.steps, "heun", async (x, t) => (await denoiser.denoise(x, t, ids, run.guidance)).guided);
    traj.states.forEach((rows, k) => rows.forEach((row, i) => near(row, run.path[k][i], 1e-4, 1e-4)));
    traj.denoised[run.steps].forEach((row, i) => near(row, run.final[i], 1e-4, 1e-4));
  });
});
