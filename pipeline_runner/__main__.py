"""`python -m pipeline_runner ...` is `runner ...`."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="runner")
