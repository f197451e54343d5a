"""The actions behind deploy-state-machine.yaml.  Each environment is a file holding the
version deployed there (`envs/staging.txt`, `envs/production.txt`); every action appends a
line to the history file, so what happened, and in which order, can be read back."""

from __future__ import annotations

from pathlib import Path


def _log(history: str, line: str) -> None:
    with open(history, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def build(history: str, version: str) -> dict[str, str]:
    artifact = Path("build") / f"app-{version}.txt"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(f"app {version}\n", encoding="utf-8")
    _log(history, f"build {version}")
    return {"artifact": str(artifact), "version": version}


def _env_file(env: str) -> Path:
    path = Path("envs") / f"{env}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def deploy(history: str, env: str, artifact: str, version: str) -> dict[str, str]:
    """Put `version` on `env`; the output names the version it replaced, for the rollback."""
    if not Path(artifact).is_file():
        raise FileNotFoundError(f"no artifact {artifact}")
    path = _env_file(env)
    previous = path.read_text(encoding="utf-8").strip() if path.exists() else "none"
    path.write_text(version + "\n", encoding="utf-8")
    _log(history, f"deploy {version} to {env} (was {previous})")
    return {"env": env, "version": version, "previous": previous}


def rollback(history: str, env: str, previous: str) -> None:
    """The compensation of a deployment: the version it replaced goes back."""
    path = _env_file(env)
    if previous == "none":
        path.unlink(missing_ok=True)
    else:
        path.write_text(previous + "\n", encoding="utf-8")
    _log(history, f"rollback {env} to {previous}")


def promote(history: str, decision: str, artifact: str, version: str, fail: bool) -> dict[str, str]:
    """The transition the approval gate chose: `promote` deploys to production, `rollback`
    fails the step, so the saga undoes staging."""
    if decision != "promote":
        _log(history, f"gate chose {decision}")
        raise RuntimeError(f"the approval gate chose {decision!r}: rolling back")
    result = deploy(history, "production", artifact, version)
    if fail:
        raise RuntimeError("production health check failed")
    return result


def finished(history: str, run_id: str, version: str, status: str) -> None:
    """The `finally` step: the run's end, in the history."""
    _log(history, f"run {run_id} of {version} ended {status}")
