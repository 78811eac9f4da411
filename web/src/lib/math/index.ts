export * from "./types";
export * from "./lse";
export * from "./lsr";
export * from "./drdam";
export * from "./minima";
export * from "./descent";
export * from "./diffusion";
