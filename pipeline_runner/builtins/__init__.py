"""The built-in plugins: `noop`, `shell`, `python` and `pipeline`, registered through the same
`pipeline_runner.plugins` entry points as any installed plugin."""
