"""`fauna serve`: the champion behind KServe's V1 and V2 protocols.

An entry point like the CLI and the pipeline (it reuses `fauna predict`'s model lookup),
in two rooms: `predictor` (load a model, turn request bytes into top-k species, follow
the champion pointer; no KServe import) and `server` (the KServe `Model`, batching and
the command). KServe is the `serve` extra: the step images do not carry it.
"""
