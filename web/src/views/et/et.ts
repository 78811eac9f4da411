/**
 * The trained Energy Transformer, run in the page by ONNX Runtime Web (lib/onnx: its plain
 * wasm build, single-threaded, served from this app's own assets: no network).
 */
import type { ETInfo } from "../../lib/data";
import { onnxSession, ort } from "../../lib/onnx";

/** One completion, every step t = 0..T kept (see amlab.explain.et_onnx.UnrolledCompletion). */
export interface Completion {
  steps: number;
  /** (T+1, D): the image with its hidden patches decoded from the tokens at step t */
  completed: Float32Array;
  /** (T+1, D): every patch decoded at step t */
  decoded: Float32Array;
  attentionEnergy: Float32Array;
  hopfieldEnergy: Float32Array;
  /** (T+1, H, N+1, N+1) attention probabilities [query, key]; token 0 is CLS */
  attention: Float32Array;
  ms: number;
}

export interface ETRunner {
  info: ETInfo;
  run(image: Float32Array, masked: Uint8Array): Promise<Completion>;
}

export async function makeRunner(info: ETInfo, model: Uint8Array): Promise<ETRunner> {
  const session = await onnxSession(model);
  const n = info.patches;
  return {
    info,
    async run(image, masked) {
      const t0 = performance.now();
      const feeds = {
        image: new ort.Tensor("float32", image, [1, image.length]),
        masked: new ort.Tensor("bool", Uint8Array.from(masked), [1, n]),
      };
      const out = await session.run(feeds);
      const ms = performance.now() - t0;
      const get = (name: string) => out[name].data as Float32Array;
      return {
        steps: info.settings.steps,
        completed: get("completed"),
        decoded: get("decoded"),
        attentionEnergy: get("attention_energy"),
        hopfieldEnergy: get("hopfield_energy"),
        attention: get("attention"),
        ms,
      };
    },
  };
}

/** The patch (row-major over the grid) that pixel i of an (h, w) image lies in. */
export function patchOf(i: number, w: number, patch: number, gridW: number): number {
  const r = Math.floor(i / w);
  const c = i % w;
  return Math.floor(r / patch) * gridW + Math.floor(c / patch);
}
