/**
 * The views of the explainer. Adding one is a new module under src/views/ plus one entry
 * here: the app lazy-loads it (its own JS chunk) when its route #/<id> opens.
 */
import type { Component } from "svelte";

export interface ViewProps {
  /** the query part of the route (#/<id>?a=1&b=2): a view's shareable state */
  params: URLSearchParams;
  /** write the view's state back into the route (no reload, no history entry) */
  setParams: (params: URLSearchParams) => void;
}

export interface ViewEntry {
  id: string;
  title: string;
  summary: string;
  load: () => Promise<{ default: Component<ViewProps> }>;
}

export const VIEWS: ViewEntry[] = [
  {
    id: "landscape",
    title: "Energy landscape (2-D)",
    summary:
      "Place memories, drag a query, compare the log-sum-exp and log-sum-ReLU energies side by " +
      "side: basins, descent, supports and the emergent minima of LSR.",
    load: () => import("./views/landscape/Landscape.svelte"),
  },
  {
    id: "images",
    title: "Image memory",
    summary:
      "Store handwritten digits, corrupt one, and watch retrieval step by step: the state, the " +
      "energy, and how much each memory pulls. Exact LSE, LSR, and DrDAM's random features.",
    load: () => import("./views/images/ImageMemory.svelte"),
  },
  {
    id: "diffusion",
    title: "Diffusion as memory",
    summary:
      "Two class prompts denoised from the same noise, by a trained denoiser and by the exact " +
      "denoiser of the stored digits (one attention step): steps, energies, guidance, paths.",
    load: () => import("./views/diffusion/Diffusion.svelte"),
  },
  {
    id: "et",
    title: "Energy Transformer",
    summary:
      "Hide patches of a digit and watch a trained Energy Transformer fill them in: tokens " +
      "descending one energy over T steps, its attention and Hopfield parts, attention per head.",
    load: () => import("./views/et/EnergyTransformer.svelte"),
  },
  {
    id: "transformer",
    title: "Transformer, opened up",
    summary:
      "Type a ListOps expression and watch a small trained transformer evaluate it: every " +
      "intermediate live, all heads' attention, ablation, the logit lens, one head as a memory.",
    load: () => import("./views/transformer/Transformer.svelte"),
  },
  {
    id: "fairness",
    title: "Fairness, two ways",
    summary:
      "Type a sentence and see four toxicity classifiers score it; swap an identity term, build " +
      "your own group, move the threshold: group and individual fairness metrics side by side.",
    load: () => import("./views/fairness/Fairness.svelte"),
  },
  {
    id: "gallery",
    title: "Gallery",
    summary:
      "A gallery of a text-prompted denoiser's images, read from its parquet: a map of the " +
      "images beside the training digits, filters, each image's nearest training digits and audit.",
    load: () => import("./views/gallery/Gallery.svelte"),
  },
];
