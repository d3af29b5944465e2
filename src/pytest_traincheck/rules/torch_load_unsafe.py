"""TRN502: `torch.load` that may unpickle arbitrary objects."""

from __future__ import annotations

from typing import Optional

import libcst as cst

from pytest_traincheck.versions import older_than
from pytest_traincheck.lint.rule import Invalid, Rule, Valid, get_arg, is_false

_LOAD = "torch.load"
_SAFE_DEFAULT = "2.6"  # torch.load defaults to weights_only=True from this release on


class TorchLoadUnsafe(Rule):
    """Flags `torch.load` calls that unpickle arbitrary objects.

    ## What it does
    Finds `torch.load(..., weights_only=False)`, and `torch.load(...)` with a
    `pickle_module=` but no `weights_only` (torch then falls back to full
    unpickling). When the project targets a torch older than 2.6 (the
    `torch-version` setting of `[tool.traincheck]`, or a `torch<2.6` /
    `torch==2.4.*` dependency in `pyproject.toml`), it also flags `torch.load`
    calls that do not pass `weights_only` at all, since before 2.6 the default
    was `False`.

    ## Why is this bad?
    Without `weights_only=True`, `torch.load` runs Python's `pickle`, which can
    execute arbitrary code stored in the file. A checkpoint downloaded from the
    internet or shared by someone else can then take over the machine.
    `weights_only=True` restricts loading to tensors, primitive containers and
    allow-listed classes, which is all a `state_dict` checkpoint needs.

    ## Known problems
    A `weights_only=False` needed to load a whole pickled model (`torch.save(model)`)
    from a trusted source is still reported; save `model.state_dict()`
    instead, or silence the line with `# noqa: TRN502`. The
    `TORCH_FORCE_WEIGHTS_ONLY_LOAD` environment variable is not considered.

    ## Example
    ```python
    checkpoint = torch.load(path, weights_only=False)
    ```

    ## Use instead
    ```python
    checkpoint = torch.load(path, weights_only=True)
    ```

    ## Options
    `torch-version` in `[tool.traincheck]`: the torch release the project
    runs on; below 2.6 a missing `weights_only` is reported too.
    """

    CODE = "TRN502"
    MESSAGE = ("`torch.load(..., weights_only=False)` unpickles arbitrary objects, so a malicious checkpoint runs "
               "code: pass `weights_only=True` and save `state_dict()`s, not whole objects.")
    SEVERITY = "warning"
    TRIGGERS = ("load",)

    VALID = [
        Valid("""
            import torch
            ckpt = torch.load(p, weights_only=True)
            model.load_state_dict(ckpt["model"])
            """),
        # On current torch the default is weights_only=True.
        Valid("""
            import torch
            state = torch.load("model.pt", map_location="cpu")
            """),
        Valid("""
            import pickle
            obj = pickle.load(f)
            """),
        Valid("""
            def load(path, weights_only=False):
                return path
            x = load("a", weights_only=False)
            """),
    ]
    INVALID = [
        Invalid("""
            import torch
            model = torch.load("model.pt", weights_only=False)
            """, line=2, column=9),
        Invalid("""
            from torch import load
            state = load(buffer, map_location="cpu", weights_only=False)
            """, line=2),
        Invalid("""
            import dill
            import torch
            state = torch.load(path, pickle_module=dill)
            """, line=3),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        if self.qualname(node.func) != _LOAD:
            return
        message = self._problem(node)
        if message:
            self.report(node, message)

    def _problem(self, call: cst.Call) -> Optional[str]:
        if any(arg.star for arg in call.args):
            return None  # **kwargs may set it
        weights_only = get_arg(call, "weights_only")
        if weights_only is not None:
            return self.MESSAGE if is_false(weights_only.value) else None
        if get_arg(call, "pickle_module", 2) is not None:
            return ("`torch.load` with a `pickle_module` and no `weights_only` falls back to full unpickling, so a "
                    "malicious checkpoint runs code: pass `weights_only=True` (and drop `pickle_module`).")
        if older_than(self.torch_version(), _SAFE_DEFAULT):
            return (f"Before torch {_SAFE_DEFAULT}, `torch.load` unpickles arbitrary objects unless `weights_only=True`"
                    f" (this project targets torch {self.torch_version()}): pass `weights_only=True`.")
        return None

    def torch_version(self) -> Optional[str]:
        """The torch release the project targets (None: the current one)."""
        return getattr(self.context, "torch_version", None)
