"""The explainer in headless Chromium: time to the first interactive view, time per descent
step with 1,000 digit memories, time per forward pass of the ListOps transformer, and the
size of the built app.

- first interactive: a fresh browser context (cold cache) opens #/<view>; the time is the
  page's performance.now() (milliseconds since navigation start) when the view marks itself
  ready (data-ready=true: data loaded, first landscape or first state computed). Median of
  --repeats loads.
- per step: the images view with M = 1000 stored digits plays (one step per animation frame)
  from 8 noisy queries; "step" is what the page times itself (the update x <- x - h d plus the
  model's energy and direction at the new x), averaged over up to 60 steps of each run; also
  the steps per second the animation reached over the runs that played the whole 2 s (it is
  capped by the display's frame rate; LSR's exact solver stops after a few steps, so it has none).
- bundle: bytes of JS and CSS in the build (raw and gzip), fonts, wasm and data apart.
- ET forward: the Energy Transformer view's whole T-step completion (one ONNX Runtime Web
  call, wasm, single thread) as the page times it, over 20 inputs after the first (warm-up).
- diffusion step: the diffusion view's time per sampler step (Heun, both prompts) as the page
  times it, for the learned denoiser (two ONNX Runtime Web calls of 4 rows: two prompts,
  conditional and unconditional) and the empirical memory (TypeScript, ~180 digits a class),
  over 10 seeds after the first (warm-up).
- transformer forward: the transformer view's time per forward pass of the ListOps model (18
  tokens, every intermediate kept; TypeScript) as the page times it, over 30 held-out
  expressions.

    python benchmarks/bench_explain.py [--json] [--repeats N]
"""

from __future__ import annotations

import gzip
import json
import statistics
import time

from common import parse_options
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from amlab.explain import STATIC_DIR, serve

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def offline_page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("http://127.0.0.1:", "data:"))
            else route.abort()
        ),
    )
    return context, context.new_page()


def open_view(browser, url: str, view: str, query: str = ""):
    """A fresh page on #/<view><query>, once the view marks itself ready."""
    context, page = offline_page(browser)
    page.goto(f"{url}#/{view}{query}")
    page.wait_for_selector(f"[data-testid={view}][data-ready=true]", timeout=60_000)
    return context, page


def first_interactive(browser, url: str, view: str) -> float:
    context, page = open_view(browser, url, view)
    ms = page.evaluate("performance.now()")
    context.close()
    return ms


def step_time(browser, url: str, model: str, runs: int = 8) -> dict:
    """Play from `runs` noisy queries (seeds 0..runs-1), each until it stops or for 2 s."""
    # a small step keeps gradient descent going; LSR's exact solver stops after a few steps
    context, page = open_view(browser, url, "images", f"?model={model}&n=1000&eta=0.02&sigma=0.5")
    timed_ms, timed_steps, played, wall = 0.0, 0, 0, 0.0
    for seed in range(runs):
        page.fill("[data-testid=seed]", str(seed))
        page.wait_for_function(
            "document.querySelector('[data-testid=step-count]').textContent === '0'"
        )
        t0 = time.perf_counter()
        page.click("[data-testid=play]")
        try:
            page.wait_for_selector("[data-testid=step]:disabled", timeout=2000)
            stopped = True
        except PlaywrightTimeout:
            page.click("[data-testid=play]")  # pause
            stopped = False
        seconds = time.perf_counter() - t0
        n = int(page.text_content("[data-testid=step-count]"))
        ms = float(page.text_content("[data-testid=step-ms]").split()[0])
        timed_ms += ms * min(n, 60)  # the page averages its last 60 steps
        timed_steps += min(n, 60)
        if not stopped:  # the play rate counts only runs that played the whole 2 s
            played, wall = played + n, wall + seconds
    context.close()
    return {"ms_per_step": timed_ms / timed_steps, "steps_per_s": played / wall if wall else None}


def et_forward_time(browser, url: str, runs: int = 20) -> dict:
    """The page's own time per ET forward, over `runs` digit and mask changes."""
    context, page = open_view(browser, url, "et")
    shown = "[data-testid=completed]"
    for k in range(runs):  # the mask alternates (right half first; the default is the lower)
        before = page.get_attribute(shown, "data-for")
        page.click(f"[data-testid=digit-{k % 10}]")
        page.click(f"[data-testid=hide-{('right', 'lower')[k % 2]}]")
        page.wait_for_function(
            f"document.querySelector('{shown}').dataset.for !== {json.dumps(before)}"
        )
    times = page.evaluate(
        "JSON.parse(document.querySelector('[data-testid=forward-ms]').dataset.times)"
    )
    context.close()
    manifest = json.loads((STATIC_DIR / "data" / "manifest.json").read_text())
    return {
        "median_ms": statistics.median(times[1:]),
        "min_ms": min(times),
        "runs": len(times),
        "steps": manifest["et"]["settings"]["steps"],
    }


def diffusion_step_time(browser, url: str, runs: int = 10) -> dict:
    """The diffusion view's own time per sampler step, over `runs` new seeds."""
    context, page = open_view(browser, url, "diffusion")
    times: dict[str, list[float]] = {"learned": [], "empirical": []}
    for seed in range(1, runs + 1):
        page.fill("[data-testid=seed]", str(seed))
        page.wait_for_function(
            f"document.querySelector('[data-testid=run]').dataset.for.split(':')[2] === '{seed}'"
        )
        for kind, values in times.items():
            values.append(float(page.text_content(f"[data-testid=ms-{kind}]")))
    context.close()
    return {kind: statistics.median(values) for kind, values in times.items()}


def transformer_forward_time(browser, url: str, runs: int = 30) -> dict:
    """The transformer view's own time per forward pass, over `runs` held-out expressions."""
    context, page = open_view(browser, url, "transformer")
    for _ in range(runs):
        page.click("[data-testid=random]")
    times = page.evaluate(
        "JSON.parse(document.querySelector('[data-testid=forward-ms]').dataset.times)"
    )
    context.close()
    return {"median_ms": statistics.median(times[1:]), "min_ms": min(times), "runs": len(times)}


def bundle_sizes() -> dict:
    sizes: dict[str, dict[str, int]] = {}
    for path in STATIC_DIR.rglob("*"):
        if not path.is_file():
            continue
        kind = {
            ".js": "js",
            ".css": "css",
            ".woff2": "fonts",
            ".html": "html",
            ".wasm": "wasm",
        }.get(path.suffix, "data")
        raw = path.read_bytes()
        entry = sizes.setdefault(kind, {"bytes": 0, "gzip_bytes": 0, "files": 0})
        entry["bytes"] += len(raw)
        entry["gzip_bytes"] += len(gzip.compress(raw, 9))
        entry["files"] += 1
    return sizes


def main() -> None:
    args = parse_options(__doc__, repeats=5)
    server = serve(0, background=True)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    result: dict = {"bundle": bundle_sizes(), "first_interactive_ms": {}, "step": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for view in ("landscape", "images", "et", "diffusion", "transformer"):
            times = [first_interactive(browser, url, view) for _ in range(args.repeats)]
            result["first_interactive_ms"][view] = {
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
            }
        for model in ("lse", "lsr", "drdam"):
            result["step"][model] = step_time(browser, url, model)
        result["et_forward"] = et_forward_time(browser, url)
        result["diffusion_step_ms"] = diffusion_step_time(browser, url)
        result["transformer_forward"] = transformer_forward_time(browser, url)
        browser.close()
    server.shutdown()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for kind, size in result["bundle"].items():
        print(
            f"bundle {kind}: {size['bytes'] / 1024:.1f} KiB raw, "
            f"{size['gzip_bytes'] / 1024:.1f} KiB gzip, {size['files']} files"
        )
    for view, t in result["first_interactive_ms"].items():
        print(
            f"first interactive #{view}: median {t['median']:.0f} ms "
            f"(min {t['min']:.0f}, max {t['max']:.0f})"
        )
    for model, s in result["step"].items():
        rate = s["steps_per_s"]
        print(
            f"step, M=1000 digits, {model}: {s['ms_per_step']:.3f} ms/step; "
            + ("every run stopped early" if rate is None else f"play reached {rate:.0f} steps/s")
        )
    et = result["et_forward"]
    print(
        f"ET forward ({et['steps']} steps, ONNX Runtime Web wasm, 1 thread): "
        f"median {et['median_ms']:.2f} ms, min {et['min_ms']:.2f} ms"
    )
    step = result["diffusion_step_ms"]
    print(
        f"diffusion sampler step (Heun, both prompts): learned (ONNX Runtime Web) "
        f"{step['learned']:.2f} ms, empirical memory {step['empirical']:.3f} ms"
    )
    tf = result["transformer_forward"]
    print(
        f"ListOps transformer forward (TypeScript, every intermediate): median "
        f"{tf['median_ms']:.3f} ms, min {tf['min_ms']:.3f} ms over {tf['runs']} runs"
    )


if __name__ == "__main__":
    main()
