/**
 * ONNX Runtime Web for the views' trained models: its plain wasm build, single-threaded,
 * served from this app's own assets (no network).
 */
import * as ort from "onnxruntime-web/wasm";
import wasmUrl from "onnxruntime-web/ort-wasm-simd-threaded.wasm?url";

export { ort };

export function onnxSession(model: Uint8Array): Promise<ort.InferenceSession> {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = { wasm: new URL(wasmUrl, document.baseURI).href };
  return ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
}
