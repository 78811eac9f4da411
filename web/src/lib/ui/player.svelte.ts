/** Play/pause of a view's step animation: calls `tick` every `ms` until it returns false. */
export class Player {
  playing = $state(false);
  #timer: ReturnType<typeof setInterval> | null = null;

  start(tick: () => boolean, ms: number): void {
    this.stop();
    this.playing = true;
    this.#timer = setInterval(() => {
      if (!tick()) this.stop();
    }, ms);
  }

  stop(): void {
    this.playing = false;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
