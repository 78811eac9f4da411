/** DrDAM's feature sums over all stored memories, off the main thread (M x Y x D work). */
import { featureSums, type Memories, type Projections } from "../../lib/math";

interface Request {
  id: number;
  mem: Memories;
  proj: Projections;
  beta: number;
}

self.onmessage = (event: MessageEvent<Request>) => {
  const { id, mem, proj, beta } = event.data;
  const t0 = performance.now();
  const sums = featureSums(mem, proj, proj.rows, beta);
  self.postMessage({ id, sums, ms: performance.now() - t0 }, { transfer: [sums.buffer] });
};
