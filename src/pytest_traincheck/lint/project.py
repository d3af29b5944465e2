"""Plain-data results of the cross-file project pass: conditions and class facts.

Rules that need to know about a class defined in another file (``Net``'s
forward returns softmax; ``Seq2Seq`` holds an LSTM) report a deferred finding
with a ``Condition``; the project pass settles it against the merged facts.
Nothing here imports libcst, so a warm run answered from the cache never loads
the parser.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass(frozen=True)
class Condition:
    """A fact from the project pass that a deferred finding needs.

    ``kind`` names a class fact (see ``facts.ClassFacts``): for example
    ``Condition("returns", "Net", "softmax")`` holds when the run defines an
    nn.Module class ``Net`` whose ``forward`` returns a softmax.
    """

    kind: str
    name: str
    value: str = ""


@dataclass
class ClassFacts:
    """What one class definition says about itself."""

    name: str
    bases: list[str] = field(default_factory=list)  # qualified where the imports allow
    # What forward returns: "softmax"/"log_softmax"/"sigmoid", "logits" (anything else), or
    # "class:<Name>" when it returns the output of a submodule of the user's class <Name>.
    returns: list[str] = field(default_factory=list)
    recurrent: bool = False  # holds an nn.RNN / nn.LSTM / nn.GRU (or one of their cells)
    holds: list[str] = field(default_factory=list)  # user classes it keeps as submodules (``self.enc = Encoder()``)
    direct_module: bool = False  # a base is nn.Module (or Lightning's)
    modal: bool = False  # builds or calls dropout / BatchNorm (its forward depends on train/eval mode)
    opaque: bool = False  # keeps a submodule built by something unknown (``self.f = make_layers(cfg)``)
    # ``<method>:<index>:<param>``: a method parameter stored on self (``add_loss_op(self, loss_op)``) that
    # the class then calls as a loss on its own output (``self.loss_op(self(x), y)``)
    loss_params: list[str] = field(default_factory=list)
    # ``<index>:<what>`` for each element of a tuple that forward returns (``what`` as in ``returns``);
    # ``-:other`` when some return is not a tuple
    items: list[str] = field(default_factory=list)
    # Decides its own sample order: passes shuffle=/sampler=/batch_sampler=, sets self.sampler, or defines __iter__.
    orders: bool = False


# One call of a function by name: (callee as written, callee qualified through the imports or "",
# the arguments as [position or keyword, what the caller knows it passes]). What is passed reads
# ``instance:<class>``, ``seq:<last layer>``, ``module:<torch class>``, ``act:<activation>`` (a tensor out of
# it), ``model_out:<class>``, ``model_item:<class>#<index>`` (an element of the tuple its forward returns),
# ``param:<func>:<index>:<name>`` (the caller's own parameter) or ``?``; a ``*args``/``**kwargs`` argument has
# the key ``*``. Two marks about the calling function follow the arguments: ``["!eval", "1"]`` when it switched
# something to eval mode before the call, ``["!train", "1"]`` when it calls ``.train()`` somewhere.
CallSite = tuple[str, str, list[list[object]]]

_DATALOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})

# What a torch module class computes when called, for an argument that is one (or a Sequential ending in one).
_MODULE_ACTIVATION = {"torch.nn.Softmax": "softmax", "torch.nn.LogSoftmax": "log_softmax", "torch.nn.Sigmoid": "sigmoid"}


@dataclass
class FileFacts:
    """Facts from one file: its classes by name, its module-level functions, the calls it makes by name
    and the modules it star-imports (``from model import *``)."""

    classes: dict[str, ClassFacts] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    calls: list[CallSite] = field(default_factory=list)
    stars: list[str] = field(default_factory=list)
    saves: list[str] = field(default_factory=list)  # module-level functions calling torch.save outside rank tests

    def to_dict(self) -> dict[str, object]:
        """Return plain data for the cache."""
        return {"classes": {name: vars(facts) for name, facts in self.classes.items()},
                "functions": list(self.functions), "calls": [list(site) for site in self.calls],
                "stars": list(self.stars), "saves": list(self.saves)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "FileFacts":
        """Rebuild from ``to_dict`` output."""
        classes = {name: ClassFacts(**values) for name, values in data["classes"].items()}  # type: ignore[attr-defined]
        calls = [(str(w), str(q), list(a)) for w, q, a in data["calls"]]  # type: ignore[attr-defined]
        return cls(classes, [str(f) for f in data["functions"]], calls,  # type: ignore[attr-defined]
                   [str(m) for m in data.get("stars", [])],  # type: ignore[attr-defined]
                   [str(f) for f in data.get("saves", [])])  # type: ignore[attr-defined]


class ProjectFacts:
    """The merged facts of every file in the run.

    A class name is resolved the way Python would resolve it: a class defined in
    the file that uses it wins; an imported one is looked up by its module path
    from the importing file (``from model import Net`` in ``a/train.py`` means
    ``a/model.py`` first, then ``model.py`` in each folder above; ``from .model``
    the same package), then by a unique file whose path ends in that module. A
    bare name (no import seen) is looked for in the modules the file star-imports
    (the last ``from m import *`` first, as Python binds them), else trusted only
    when one file of the run defines it: two different ``Net`` classes in one
    repository are never confused.
    """

    def __init__(self, files: Iterable[tuple[str, FileFacts]]) -> None:
        self.classes: dict[str, list[tuple[str, ClassFacts]]] = {}
        self.calls: dict[str, list[tuple[str, CallSite]]] = {}  # by the callee's last name
        self.functions: dict[str, set[str]] = {}  # file -> its module-level functions
        self.stars: dict[str, list[str]] = {}  # file -> the modules it star-imports
        self.saves: dict[str, set[str]] = {}  # file -> its module-level functions that save on every rank
        for path, facts in files:
            if facts.stars:
                self.stars[_norm(path)] = facts.stars
            for name, cls in facts.classes.items():
                self.classes.setdefault(name, []).append((path, cls))
            self.functions[_norm(path)] = set(facts.functions)
            if facts.saves:
                self.saves[_norm(path)] = set(facts.saves)
            for site in facts.calls:
                self.calls.setdefault(site[0].rsplit(".", 1)[-1], []).append((path, site))

    def _candidates(self, name: str, path: str) -> list[tuple[str, ClassFacts]]:
        found = self.classes.get(name.rsplit(".", 1)[-1], [])
        local = [entry for entry in found if entry[0] == path]
        if local:
            return local
        if "." not in name:  # a bare name: a star-imported module's, else one file of the run must define it
            for module in reversed(self.stars.get(_norm(path), [])):
                for candidate in _module_files(module, path):
                    located = [entry for entry in found if _norm(entry[0]) == candidate]
                    if located:
                        return located
            return found if len({p for p, _ in found}) == 1 else []
        module = name.rsplit(".", 1)[0]
        for candidate in _module_files(module, path):
            located = [entry for entry in found if _norm(entry[0]) == candidate]
            if located:
                return located
        hint = "/" + module.lstrip(".").replace(".", "/")
        by_suffix = [e for e in found if _norm(e[0]).endswith((hint + ".py", hint + "/__init__.py"))
                     or _norm(e[0]) in (hint[1:] + ".py", hint[1:] + "/__init__.py")]
        return by_suffix if len({p for p, _ in by_suffix}) == 1 else []

    def is_module(self, name: str, path: str, _seen: Optional[set[str]] = None) -> bool:
        """True if every class of that name derives (transitively) from nn.Module."""
        seen = _seen if _seen is not None else set()
        found = self._candidates(name, path)
        if name in seen or not found:
            return False
        seen.add(name)
        return all(c.direct_module or any(self.is_module(b, p, seen) for b in c.bases) for p, c in found)

    def returns(self, name: str, path: str, activation: str, _seen: Optional[set[str]] = None) -> bool:
        """True if every class of that name returns only ``activation`` from forward (inherited too)."""
        seen = _seen if _seen is not None else set()
        found = self._candidates(name, path)
        if name in seen or not found:
            return False
        seen.add(name)
        def ends_with(returned: str, path: str) -> bool:
            if returned.startswith("class:"):
                return self.returns(returned[len("class:"):], path, activation, seen)
            return returned == activation

        return all(
            (bool(c.returns) and all(ends_with(r, p) for r in c.returns))
            or (not c.returns and any(self.returns(b, p, activation, seen) for b in c.bases))
            for p, c in found
        )

    def returns_item(self, name: str, path: str, index: str, activation: str) -> bool:
        """True if every class of that name returns tuples from forward whose ``index`` element is ``activation``."""
        found = self._candidates(name, path)
        if not found:
            return False
        for _, c in found:
            mine = [item.partition(":")[2] for item in c.items if item.partition(":")[0] in (index, "-")]
            if not mine or any(what != activation for what in mine):
                return False
        return True

    def recurrent(self, name: str, path: str, _seen: Optional[set[str]] = None) -> bool:
        """True if some class of that name (or a base of it) holds a recurrent layer."""
        seen = _seen if _seen is not None else set()
        if name in seen:
            return False
        seen.add(name)
        return any(c.recurrent or any(self.recurrent(other, p, seen) for other in (*c.bases, *c.holds))
                   for p, c in self._candidates(name, path))

    def modal(self, name: str, path: str, _seen: Optional[set[str]] = None) -> bool:
        """True if some class of that name (or a base or submodule of it) has dropout or BatchNorm."""
        seen = _seen if _seen is not None else set()
        if name in seen:
            return False
        seen.add(name)
        return any(c.modal or any(self.modal(other, p, seen) for other in (*c.bases, *c.holds))
                   for p, c in self._candidates(name, path))

    def nonmodal(self, name: str, path: str, _seen: Optional[set[str]] = None) -> bool:
        """True if the run defines that class and provably nothing in it depends on train/eval mode."""
        seen = _seen if _seen is not None else set()
        if name in seen:
            return True  # a cycle adds nothing new
        seen.add(name)
        found = self._candidates(name, path)
        return bool(found) and all(
            not c.modal and not c.opaque
            and all(self.nonmodal(other, p, seen) for other in c.holds)
            and all(b.startswith("torch.") or self.nonmodal(b, p, seen) for b in c.bases)
            for p, c in found)

    def loss_param(self, name: str, path: str, method: str, slot: str, _seen: Optional[set[str]] = None) -> bool:
        """True if the class (or a base) applies what ``method`` receives at ``slot`` as a loss to its own output."""
        seen = _seen if _seen is not None else set()
        if name in seen:
            return False
        seen.add(name)
        for p, c in self._candidates(name, path):
            for entry in c.loss_params:
                where, index, param = entry.split(":")
                if where == method and slot in (index, param):
                    return True
            if any(self.loss_param(b, p, method, slot, seen) for b in c.bases):
                return True
        return False

    def is_loader(self, name: str, path: str, _seen: Optional[set[str]] = None) -> bool:
        """True if every class of that name derives from torch's DataLoader and none on the way sets the order."""
        seen = _seen if _seen is not None else set()
        found = self._candidates(name, path)
        if name in seen or not found:
            return False
        seen.add(name)
        return all(not c.orders and any(b in _DATALOADERS or (not b.startswith("torch.") and self.is_loader(b, p, seen))
                                        for b in c.bases) for p, c in found)

    def holds(self, condition: Condition, path: str) -> bool:
        """Settle a deferred finding's condition, for a finding in the file ``path``."""
        if condition.kind == "returns":
            return self.is_module(condition.name, path) and self.returns(condition.name, path, condition.value)
        if condition.kind == "recurrent":  # ``A|B``: any of these classes (one optimizer, several models)
            return any(self.is_module(name, path) and self.recurrent(name, path) for name in condition.name.split("|"))
        if condition.kind == "not-recurrent":
            return not self.recurrent(condition.name, path)
        if condition.kind == "loader":
            return self.is_loader(condition.name, path)
        if condition.kind == "saves":
            return self.function_saves(condition.name, path)
        if condition.kind == "param":
            return self.param_holds(condition.name, condition.value, path, set())
        if condition.kind == "torch-missing":  # TRN208 under a torch release other than the shipped table's
            from pytest_traincheck.analyses.torch_table import installed_has

            return not installed_has(condition.name, condition.value)
        if condition.kind == "modal":
            return self.is_module(condition.name, path) and self.modal(condition.name, path)
        if condition.kind == "maybe-modal":
            return not self.nonmodal(condition.name, path)
        if condition.kind == "item":  # value ``<index>:<activation>``: an element of the tuple forward returns
            index, _, activation = condition.value.partition(":")
            return self.is_module(condition.name, path) and self.returns_item(condition.name, path, index, activation)
        if condition.kind == "loss-param":  # value ``<method>:<position or keyword>:<activation>``
            method, _, rest = condition.value.partition(":")
            slot, _, activation = rest.rpartition(":")
            return self.is_module(condition.name, path) and self.returns(condition.name, path, activation) \
                and self.loss_param(condition.name, path, method, slot)
        raise ValueError(f"unknown condition kind {condition.kind!r}")


    def function_saves(self, qual: str, path: str) -> bool:
        """True if ``module.func`` imported by ``path`` is a function of the run that calls torch.save unguarded."""
        module, _, func = qual.rpartition(".")
        if not module:
            return False
        resolved = next((f for f in _module_files(module, path) if f in self.functions), None)
        return resolved is not None and func in self.saves.get(resolved, set())

    # -- parameters: what every call site passes ------------------------------------------------
    def call_sites(self, func: str, path: str) -> list[tuple[str, list[list[object]]]]:
        """Return (caller's file, arguments) of every recorded call that may reach ``func`` of ``path``.

        A call resolved by its import to another file of the run is left out; one that cannot be
        resolved (a bare name its file does not define, a module outside the run) is kept, so that
        it must agree too: an unresolved caller never makes a finding, it can only prevent one.
        """
        target = _norm(path)
        sites = []
        for caller, (written, qual, args) in self.calls.get(func, []):
            here = _norm(caller)
            if not qual:
                if "." in written or (here != target and func in self.functions.get(here, set())):
                    continue  # a method call, or the caller's own function of that name
                if here == target and func not in self.functions.get(here, set()):
                    continue
                sites.append((caller, args))
                continue
            module, _, name = qual.rpartition(".")
            if name != func or not module:
                continue
            resolved = next((f for f in _module_files(module, caller) if f in self.functions), None)
            if resolved is None or resolved == target:
                sites.append((caller, args))
        return sites

    def param_holds(self, func: str, requirements: str, path: str, seen: set[tuple[str, str, str]]) -> bool:
        """True if every call of ``func`` (of ``path``) passes what ``requirements`` ask, and one exists.

        ``requirements`` are ``;``-separated ``<index>:<name>=<want>``, ``want`` being ``returns:<activation>``
        (a model whose forward returns it), ``module:<class>|<class>`` (an instance of one of these torch classes),
        ``modal`` (an instance of a user class with dropout or BatchNorm; of a class the run does not define, when
        the caller switches it with ``.train()``), ``maybe`` (anything but an instance of a class of the run
        provably without them), ``out:<activation>`` (a tensor that is that activation's output) or ``any``; and
        ``!eval``: no caller switched a model to eval mode before the call (followed up the callers of callers
        that pass their own parameter on).
        """
        key = (_norm(path), func, requirements)
        if key in seen or len(seen) > 20:  # a recursive function, or a very long chain of callers
            return False
        seen.add(key)
        try:
            sites = self.call_sites(func, path)
            return bool(sites) and all(self._site_passes(args, requirements, caller, seen) for caller, args in sites)
        finally:
            seen.discard(key)  # ``seen`` holds the chain being followed, not every condition settled

    def _site_passes(self, args: list[list[object]], requirements: str, caller: str,
                     seen: set[tuple[str, str, str]]) -> bool:
        if any(k == "*" for k, _ in args):
            return False
        marks = {str(k) for k, _ in args if str(k).startswith("!")}
        no_eval = "!eval" in requirements.split(";")
        if no_eval and "!eval" in marks:
            return False
        for requirement in requirements.split(";"):
            if requirement.startswith("!"):
                continue
            param, _, want = requirement.partition("=")
            index, _, name = param.partition(":")
            passed = next((str(d) for k, d in args if k == name), None)
            if passed is None and index.isdigit():
                passed = next((str(d) for k, d in args if k == int(index)), None)
            if passed is None or not self._passes(passed, want, caller, seen, marks, no_eval):
                return False
        return True

    def _passes(self, passed: str, want: str, caller: str, seen: set[tuple[str, str, str]],
                marks: frozenset[str] | set[str] = frozenset(), no_eval: bool = False) -> bool:
        kind, _, detail = passed.partition(":")
        wanted, _, what = want.partition(":")
        if kind == "param":
            func, _, param = detail.partition(":")
            return self.param_holds(func, f"{param}={want}" + (";!eval" if no_eval else ""), caller, seen)
        if wanted == "any":
            return True
        if wanted == "maybe":  # anything but a class of the run provably without dropout and BatchNorm
            return kind != "instance" or not self.nonmodal(detail, caller)
        if wanted == "modal":
            if kind != "instance":
                return False
            if self._candidates(detail, caller):
                return self.is_module(detail, caller) and self.modal(detail, caller)
            return "!train" in marks  # a class from outside the run that the caller switches between modes
        if wanted == "returns":
            if kind == "instance":
                return self.is_module(detail, caller) and self.returns(detail, caller, what)
            return kind in ("seq", "module") and _MODULE_ACTIVATION.get(detail) == what
        if wanted == "module":
            return kind == "module" and detail in what.split("|")
        if wanted == "out":  # a tensor: ``act:<activation>`` or an output of a model class (or one element of it)
            if kind == "act":
                return detail == what
            if kind == "model_out":
                return self.is_module(detail, caller) and self.returns(detail, caller, what)
            if kind == "model_item":
                cls, _, index = detail.rpartition("#")
                return self.is_module(cls, caller) and self.returns_item(cls, caller, index, what)
        return False


def _norm(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def _module_files(module: str, path: str) -> list[str]:
    """Return the files an import of ``module`` from the file ``path`` can mean, most likely first.

    A relative import (``.model``) is resolved from the importing file's package; an absolute one
    is looked for beside the importing file (a script's own folder is first on ``sys.path``), then
    in each folder above it (a package or source root).
    """
    dots = len(module) - len(module.lstrip("."))
    rel = module.lstrip(".").replace(".", "/")
    folder = posixpath.dirname(_norm(path))
    if dots:
        for _ in range(dots - 1):
            folder = posixpath.dirname(folder)
        bases = [folder]
    else:
        bases = [folder]
        while folder not in ("", "/", "."):
            folder = posixpath.dirname(folder)
            bases.append(folder)
    files = []
    for base in bases:
        stem = posixpath.normpath(posixpath.join(base, rel)) if rel else base
        files += [stem + ".py", posixpath.join(stem, "__init__.py")]
    return files
