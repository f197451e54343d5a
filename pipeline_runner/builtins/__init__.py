"""The built-in plugins: `noop`, `shell`, `python`, `pipeline` and `approval`, registered
through the same `pipeline_runner.plugins` entry points as any installed plugin."""
