"""``wdrec``: the command. ``fit``, ``validate`` and ``test`` are the training job (:mod:`wdrec.job`);
``tune``, ``recommend`` and ``predict`` are routed to their own modules before LightningCLI parses.
Every subcommand reports bad input the same way: one line, exit status 2."""

from __future__ import annotations

import gc
import sys

from wdrec.job import run, user_error


def main(args: list[str] | None = None) -> None:
    """``wdrec``: bad data, an unreachable data source or tracking store, or a config value
    that is refused end the command with one line ``wdrec: <message>`` and exit status 2.

    ``wdrec tune`` (hyperparameter search, :mod:`wdrec.tune`) is routed before LightningCLI
    parses: its own flags are no Lightning arguments, and Optuna is imported only for it.
    So are ``wdrec recommend`` and ``wdrec predict`` (batch scoring with a model bundle,
    :mod:`serving.batch`, which reports its own bad input the same way).
    """
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] == ["tune"]:
            from wdrec.tune import tune

            tune(argv[1:])
        elif argv[:1] in (["recommend"], ["predict"]):
            from serving.batch import main as batch

            batch(argv)
        else:
            run(args)  # None, not argv: LightningCLI warns about argument lists given from Python
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        print(f"wdrec: {' '.join(str(problem).split())}", file=sys.stderr)
        sys.exit(2)
    finally:
        if args is None:  # the command, not a caller that lives on: see exit_quickly
            exit_quickly()


def exit_quickly() -> None:
    """Let the interpreter end without a last garbage collection over every object left: after
    importing Lightning and MLflow that pass took 1.6 s of a 2-core machine's wall time per command
    (docs/benchmarks.md). Frozen objects are never collected, so only a process about to end may
    call this; the operating system takes its memory back at once, and exit handlers still run."""
    gc.freeze()


if __name__ == "__main__":
    main()
