/** Play/pause of a view's step animation: calls `tick` every `ms` (or, without `ms`, every
 * animation frame) until it returns false. */
export class Player {
  playing = $state(false);
  #timer: ReturnType<typeof setInterval> | null = null;
  #frame: number | null = null;

  start(tick: () => boolean, ms?: number): void {
    this.stop();
    this.playing = true;
    if (ms !== undefined) {
      this.#timer = setInterval(() => {
        if (!tick()) this.stop();
      }, ms);
      return;
    }
    const frame = () => {
      this.#frame = null;
      if (!tick()) this.stop();
      else this.#frame = requestAnimationFrame(frame);
    };
    this.#frame = requestAnimationFrame(frame);
  }

  stop(): void {
    this.playing = false;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#frame !== null) cancelAnimationFrame(this.#frame);
    this.#timer = null;
    this.#frame = null;
  }
}
