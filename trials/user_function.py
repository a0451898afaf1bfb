"""A training function of your own as the trial (the sweep's ``trial.function``).

The function takes the sampled parameters as a dict and reports through :mod:`trials.report`::

    trial: {function: "mypackage.train:main"}      # a module on the import path (or in the working directory)
    trial: {function: "train.py:main"}             # a file, relative to the sweep file

Both the driver (to check it before anything runs) and every worker load it with :class:`FunctionRef`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trials import report
from trials.objective import Mode


class UserFunctionError(ValueError):
    """The function cannot be found or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class FunctionRef:
    """Where a training function lives: a module name or the absolute path of a ``.py`` file, and the function's name."""

    module: str
    attribute: str
    search_path: tuple[str, ...] = ()  # folders to import from besides sys.path (the sweep's working directory)

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}"

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")

    @classmethod
    def parse(cls, reference: str, base_dir: Path, search_path: tuple[str, ...] = ()) -> FunctionRef:
        """Read ``module:function`` or ``path/to/file.py:function``; a relative file path starts at ``base_dir``."""
        module, colon, attribute = reference.strip().rpartition(":")
        if not colon or not module or not attribute.isidentifier():
            raise UserFunctionError('give "package.module:function" or "path/to/train.py:function"')
        if module.endswith(".py"):
            path = next((candidate for candidate in (Path(base_dir) / module, Path(module)) if candidate.is_file()), None)
            if path is None:
                raise UserFunctionError(f"no such file {module} (relative paths start at the sweep file's folder, {base_dir}); fix the path")
            return cls(str(path.resolve()), attribute, search_path)
        if not all(part.isidentifier() for part in module.split(".")):
            raise UserFunctionError(f"{module!r} is not a module name; give a dotted module name or a path ending in .py")
        return cls(module, attribute, search_path)

    def load(self) -> Callable:
        """Import the module and return the function; raise :class:`UserFunctionError` saying what is wrong."""
        for folder in reversed(self.search_path):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        printed, complained = io.StringIO(), io.StringIO()  # argparse's usage lines, say: kept out of the one-line error
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(complained):
                module = self._import_file() if self.is_file else importlib.import_module(self.module)
        except SystemExit as error:  # sys.exit() or argparse at module level
            lines = (complained.getvalue().strip() or printed.getvalue().strip()).splitlines()
            exited = repr(error.code) if isinstance(error.code, str) else f"code {error.code}"
            said = f", after printing: {_one_line(lines[-1])}" if lines else ""
            raise UserFunctionError(
                f"importing {self.module} exited ({exited}{said}): it runs a program when imported, e.g. argparse at "
                'module level; put that code under `if __name__ == "__main__":`'
            ) from None
        except ModuleNotFoundError as error:
            if error.name and (self.module == error.name or self.module.startswith(error.name + ".")):
                raise UserFunctionError(
                    f"no module named {error.name!r}; install its package, run hpo from the folder that holds it, "
                    f"or give a file path (path/to/{self.module.split('.')[-1]}.py:{self.attribute})"
                ) from None
            raise UserFunctionError(f"importing {self.module} failed (ModuleNotFoundError: {error}); install what it needs") from None
        except Exception as error:  # noqa: BLE001 - anything the user's module raises while importing
            raise UserFunctionError(f"importing {self.module} failed ({type(error).__name__}: {_one_line(error)}); fix the module") from None
        sys.stdout.write(printed.getvalue())  # what the module printed while importing, where it printed it
        sys.stderr.write(complained.getvalue())
        function = getattr(module, self.attribute, None)
        if function is None:
            raise UserFunctionError(f"{self.module} has no {self.attribute!r}; name a function defined there")
        if not callable(function):
            raise UserFunctionError(f"{self.attribute} in {self.module} is a {type(function).__name__}, not a function; name a function def {self.attribute}(config)")
        return function

    def _import_file(self):
        path = Path(self.module)
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        name = path.stem
        existing = sys.modules.get(name)
        if existing is not None:
            file = getattr(existing, "__file__", None)
            if file and Path(file).resolve() == path:
                return existing
            name = f"_hpo_user_{path.stem}"  # another module already has the plain name
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserFunctionError(f"cannot import {path} as a Python module; give a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


@dataclass(frozen=True)
class UserFunctionSettings:
    """Fixed for every trial of a sweep that runs a function of your own."""

    function: FunctionRef
    max_epochs: int
    objectives: tuple[str, ...]  # every report must include these; the first is the primary
    mode: Mode  # of the primary objective
    patience: int | None = None  # epochs without improvement before the trial ends; None never
    evals_per_epoch: int = 1  # reports that make one epoch


def run_user_function(config: dict, settings: UserFunctionSettings, data=None) -> None:
    """The Ray Tune trainable: call the function with the sampled parameters while
    :func:`trials.report.epoch` reports to this trial."""
    report.allow_slow_stop()
    function = settings.function.load()
    with report.user_trial(settings.max_epochs, settings.objectives, settings.mode, settings.patience, settings.evals_per_epoch) as session:
        try:
            returned = function(dict(config))
        except report.TrialStopped:
            return
        session.close(returned)


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())[:300]
