"""Developer sessions: ``nox -s tests`` (what CI runs), ``nox -s lint``, ``nox -s docs``, ``nox -s sharding``."""

import hashlib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]

# One pytest worker per core, at most 4: most slow tests wait on subprocesses that import torch and MLflow.
# worksteal: an idle worker takes tests queued on a busy one, so the minute-long tests do not end the run alone.
PARALLEL = ("-n", "auto", "--maxprocesses", "4", "--dist", "worksteal")


# distributed=model_parallel's torchrec and fbgemm (CPU build), installed without their dependencies: torchrec
# declares the CUDA fbgemm-gpu, which would overwrite the CPU build (see the sharding extra in pyproject.toml)
TORCHREC = ("torchrec==1.8.0", "fbgemm-gpu-cpu==1.8.0")


def install_for_tests(session: nox.Session) -> None:
    """easyrec with its test, sharding and ray extras, and torchrec with fbgemm, so that the model_parallel and Ray
    cluster tests run."""
    session.install("-e", ".[test,sharding,ray]")
    session.install("--no-deps", *TORCHREC)


@nox.session
def tests(session: nox.Session) -> None:
    """Install easyrec with its test extras and run the whole test suite (slow end-to-end tests included)."""
    install_for_tests(session)
    # the 20 slowest tests end the log: where CI's time goes
    session.run("pytest", *PARALLEL, "--durations=20", *session.posargs)


@nox.session
def fast(session: nox.Session) -> None:
    """The unit tests only, without the end-to-end CLI runs."""
    install_for_tests(session)
    session.run("pytest", *PARALLEL, "-m", "not slow", *session.posargs)


@nox.session
def sharding(session: nox.Session) -> None:
    """The distributed=model_parallel tests (torchrec, 2 gloo workers), with the sharding install."""
    install_for_tests(session)
    session.run("pytest", "-n", "0", "tests/distributed/test_model_parallel.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format checks."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site into site/ with ``mkdocs build --strict``: any warning (a broken link, a page left out of
    the nav) fails. tests/test_docs.py, part of the suite, checks that the docs and conf/ name the same options."""
    # The docs extra alone: mkdocs needs neither easyrec nor torch.
    session.install(*nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]["docs"])
    # Material's banner about its successor is not a build warning; keep the output to what --strict judges.
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """easyrec against DeepCTR-Torch, FuxiCTR and plain PyTorch loops (needs ../shared/bench); ``-- --quick``.

    Its venv is kept between runs, and the (editable) install is redone only when pyproject.toml changes (pip's
    check of an installed environment takes seconds of a quick run's few minutes)."""
    marker = Path(session.virtualenv.location) / ".easyrec-pyproject.sha256"
    wanted = hashlib.sha256(Path("pyproject.toml").read_bytes()).hexdigest()
    if not marker.exists() or marker.read_text() != wanted:
        session.install("-e", ".")
        marker.write_text(wanted)
    session.run("python", "benchmarks/vs_peers.py", *session.posargs)
