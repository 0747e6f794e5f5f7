"""Everything that knows Dagster: the code location, the per-domain asset factory, assets and
checks, resources, the instance, the trainer launchers (Pipes subprocess / Kubernetes pod) and the
`slm run` lifecycle. Asset bodies are a few lines over the plain stage functions in `data/`,
`evals/` and `training/`, which the CLI and tests call too.
"""
