/** The data `amlab export` writes into public/data/, loaded once per page. */
import type { PromptWords } from "./captions";
import type { Axes, FlowSampler, Projections, ScheduleConfig } from "./math";
import { type Classifier, classifierFrom, type FairnessModelInfo, type TokenGroups } from "./math/fairness";
import { type TransformerConfig, type TransformerWeights, unpackTensors } from "./math/transformer";

export interface Digits {
  /** (N, D) pixel values in [0, 1] (counts / 16, as amlab.data.digits) */
  images: Float64Array;
  labels: number[];
  count: number;
  dim: number;
  shape: [number, number];
}

/** Digit i's pixels (D,): a view into `images`. */
export function digitImage(digits: Digits, i: number): Float64Array {
  return digits.images.subarray(i * digits.dim, (i + 1) * digits.dim);
}

let manifest: Promise<Record<string, Record<string, unknown>>> | null = null;
let digits: Promise<Digits> | null = null;
let projections: Promise<Projections> | null = null;

/** The response for data/`file`, or an Error that names the file and says what writes it. */
export async function fetchOk(file: string, remedy = "run `amlab export`"): Promise<Response> {
  const response = await fetch(`data/${file}`);
  if (!response.ok) throw new Error(`data/${file}: HTTP ${response.status} (${remedy})`);
  return response;
}

/** The bytes of data/`file` (see fetchOk). */
async function fetchBuffer(file: string): Promise<ArrayBuffer> {
  return (await fetchOk(file)).arrayBuffer();
}

function getManifest() {
  manifest ??= fetchOk("manifest.json").then((r) => r.json());
  return manifest;
}

export function loadDigits(): Promise<Digits> {
  digits ??= fetchOk("digits.json")
    .then((r) => r.json())
    .then((raw: { shape: [number, number]; scale: number; labels: number[]; pixels: number[] }) => {
      const dim = raw.shape[0] * raw.shape[1];
      const images = Float64Array.from(raw.pixels, (p) => p / raw.scale);
      return { images, labels: raw.labels, count: raw.labels.length, dim, shape: raw.shape };
    });
  return digits;
}

/** DrDAM's projections S (rows, D) as float32, drawn by amlab with the manifest's seed. */
export function loadProjections(): Promise<Projections> {
  projections ??= getManifest().then(async (m) => {
    const info = m.projections as { file: string; rows: number; dim: number };
    const S = new Float32Array(await fetchBuffer(info.file));
    if (S.length !== info.rows * info.dim) throw new Error("projections.bin does not match manifest.json");
    return { S, rows: info.rows, d: info.dim };
  });
  return projections;
}

/** The Energy Transformer's entry in manifest.json (written by amlab.explain.et_onnx). */
export interface ETInfo {
  file: string;
  settings: { image_shape: number[]; patch: number; dim: number; steps: number; alpha: number; hopfield_memories: number };
  patches: number;
  grid: [number, number];
  heads: number;
  head_dim: number;
  beta: number;
  inputs: string[];
  outputs: string[];
  /** digits the model never saw in training */
  held_out: number[];
}

/** What every trained denoiser's entry in manifest.json has (amlab.explain.diffusion_onnx). */
export interface DenoiserInfo {
  file: string;
  config: { schedule: ScheduleConfig; num_classes: number; sigma_data: number; shape: number[] };
  sampler: { method: FlowSampler; steps: number };
  /** y, s, and labels (the class model) or tokens (the text model) */
  inputs: string[];
  outputs: string[];
}

/** The trained class-conditional denoiser's entry in manifest.json. */
export interface DiffusionInfo extends DenoiserInfo {
  /** the training run's metrics.json (amlab train diffusion) */
  metrics: { images: number; steps: number; guidance: number; prompted_accuracy: number; prompted_samples: number; final_loss: number };
  /** the embedded digits' two principal axes (the view's 2-D projection) */
  pca: Axes & { explained: number[] };
}

const models = new Map<string, Promise<{ info: unknown; model: Uint8Array }>>();

/** A trained model's manifest entry and its ONNX bytes. */
function loadModel<Info>(key: string): Promise<{ info: Info; model: Uint8Array }> {
  if (!models.has(key)) {
    models.set(key, getManifest().then(async (m) => {
      const info = m[key] as unknown as { file: string };
      const model = new Uint8Array(await fetchBuffer(info.file));
      return { info, model };
    }));
  }
  return models.get(key) as Promise<{ info: Info; model: Uint8Array }>;
}

/** The trained Energy Transformer: its manifest entry and the ONNX model's bytes. */
export const loadET = () => loadModel<ETInfo>("et");

/** The trained class-conditional denoiser: its manifest entry and the ONNX model's bytes. */
export const loadDiffusion = () => loadModel<DiffusionInfo>("diffusion");

/** The trained text-prompted denoiser's entry in manifest.json: the words a prompt may use,
 * the caption of every embedded digit, and its training run's adherence per attribute. */
export interface TextDiffusionInfo extends DenoiserInfo, PromptWords {
  captions: string[];
  /** the saved model's hash (amlab.io.model_hash), as a gallery's rows name their model */
  model_hash: string;
  metrics: {
    images: number;
    steps: number;
    guidance: number;
    prompted_samples: number;
    adherence: Record<string, { adherence: number; chance: number; prompts: number }>;
  };
}

/** The trained text-prompted denoiser (amlab train diffusion --text): entry and ONNX bytes. */
export const loadTextDiffusion = () => loadModel<TextDiffusionInfo>("diffusion_text");

/** The text-prompted denoiser's manifest entry alone (no ONNX bytes). */
export const textDiffusionInfo = () => getManifest().then((m) => m.diffusion_text as unknown as TextDiffusionInfo);

/** One shipped ListOps transformer's entry in manifest.json (amlab.explain.listops). */
export interface ListOpsModelInfo {
  file: string;
  config: TransformerConfig;
  /** token id -> token (a causal model's ends with '=') */
  vocab: string[];
  tensors: { name: string; shape: number[]; offset: number }[];
  /** the operations it was trained on */
  ops: string[];
  parameters: number;
  steps: number;
  train_size: number;
  /** accuracy on held-out test expressions (amlab listops train's record) */
  test_accuracy: number;
  test_per_op: Record<string, number>;
  test_count: Record<string, number>;
  /** the first held-out test expressions and their values */
  examples: [string, number][];
  /** the principal axes of its digit embeddings (rows of the values 0..9) */
  digit_pca: Axes & { explained: number[] };
}

export interface ListOpsInfo {
  models: Record<string, ListOpsModelInfo>;
}

export interface ListOpsModel {
  info: ListOpsModelInfo;
  weights: TransformerWeights;
}

let listops: Promise<Record<string, ListOpsModel>> | null = null;

/** The shipped ListOps transformers by name: manifest entries and float32 weights. */
export function loadListOps(): Promise<Record<string, ListOpsModel>> {
  listops ??= getManifest().then(async (m) => {
    const entry = m.listops as unknown as ListOpsInfo;
    // the models' files fetched at once, not one after another
    const models = await Promise.all(
      Object.entries(entry.models).map(async ([name, info]): Promise<[string, ListOpsModel]> => {
        const buffer = await fetchBuffer(info.file);
        return [name, { info, weights: { config: info.config, tensors: unpackTensors(buffer, info.tensors) } }];
      }),
    );
    return Object.fromEntries(models);
  });
  return listops;
}

/** The fairness view's data (amlab.explain.fairness): token groups and the balanced test set. */
export interface FairnessData {
  groups: TokenGroups;
  test: { texts: string[]; labels: number[]; group: string[]; sha256: string };
}

export interface Fairness {
  data: FairnessData;
  /** the shipped classifiers by name, in the manifest's order */
  models: { info: FairnessModelInfo; classifier: Classifier }[];
}

let fairness: Promise<Fairness> | null = null;

/** The shipped text classifiers (manifest entries and float32 weights) and the test set. */
export function loadFairness(): Promise<Fairness> {
  fairness ??= getManifest().then(async (m) => {
    const entry = m.fairness as unknown as { data: string; models: Record<string, FairnessModelInfo> };
    // the data and the models' files fetched at once, not one after another
    const [data, models] = await Promise.all([
      fetchOk(entry.data).then((r) => r.json() as Promise<FairnessData>),
      Promise.all(
        Object.entries(entry.models).map(async ([name, info]) => ({
          info,
          classifier: classifierFrom(name, info, await fetchBuffer(info.file)),
        })),
      ),
    ]);
    return { data, models };
  });
  return fairness;
}
