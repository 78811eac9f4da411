"""The jobs behind the ``amlab`` commands that are not paper reproductions: retrieval,
training and evaluating the Energy Transformer's tasks, training a denoiser, the ListOps
runs and sweep, and ``amlab bench``; with the figures and the measuring tools they use.
Each takes a configuration and an output directory and returns its metrics; the CLI only
wires options to them."""
