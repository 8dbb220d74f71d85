"""Every job `python -m diffbfr_jax.main --config=...` runs, one module each, named as
`config.job` names it (the folder is the job table).

Each has one shape: `run(config, workdir) -> dict` checks its config first (errors name the
field), writes its outputs where `job_outputs.folder` says (the config's output folder, else
--workdir) and returns one JSON-able summary that it also writes there as summary.json. A module
may set `PROCESSES` ('all', 'main' or 'one'; see `main.run`). A job uses the library modules of
the package and may call another job's `run`, never its other functions.
"""
