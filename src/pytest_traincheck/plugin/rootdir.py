"""Keep `--train-sanity-report PATH` / `--train-sanity-logdir DIR` from choosing pytest's rootdir.

pytest determines its rootdir and config file *before* it loads plugins. At that point it
does not know this plugin's options yet, so in `--train-sanity-report /elsewhere/r.json` it
takes the existing path for a test path, and the rootdir becomes `/elsewhere`: the project's
pyproject.toml is ignored. Once the plugin is loaded (and before any conftest is), the
determination is redone without the option values; when pytest cannot be repaired safely,
the run stops with a one-line error instead of silently using the wrong project.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import pytest

# The options whose value is a path (the `=` form is never mistaken for a test path).
PATH_OPTIONS = ("--train-sanity-report", "--train-sanity-logdir")
# Ini settings pytest applied from the wrong config file before the plugin could step in
# (`pythonpath` too, but that one is applied here again).
_EARLY_KEYS = ("addopts", "required_plugins", "minversion")


def repair_rootdir(config: pytest.Config, args: list[str]) -> None:
    """Redo pytest's rootdir/config-file choice if a path option's value took part in it."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in PATH_OPTIONS]
    if not any(Path(config.invocation_params.dir, v).exists() for v in values):
        return  # only an existing path is taken for a test path
    from _pytest.config.findpaths import determine_setup

    ns = config.known_args_namespace  # re-parsed by pytest with this plugin's options known
    kwargs: dict[str, Any] = dict(inifile=ns.inifilename, args=ns.file_or_dir, rootdir_cmd_arg=ns.rootdir or None,
                                  invocation_dir=config.invocation_params.dir)
    if "override_ini" in inspect.signature(determine_setup).parameters:
        kwargs["override_ini"] = ns.override_ini
    found = determine_setup(**kwargs)
    rootpath, inipath, inicfg = found[0], found[1], found[2]
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    ini_attr = "_inicfg" if hasattr(config, "_inicfg") else "inicfg"
    early = [key for key in _EARLY_KEYS if key in inicfg]
    if early or not hasattr(config, "_rootpath") or not hasattr(config, ini_attr):
        shown = " ".join(f"{opt}={args[args.index(opt) + 1]}" for opt in PATH_OPTIONS if opt in args[:-1])
        raise pytest.UsageError(
            f"pytest read the value of a traincheck option as a test path and chose rootdir {config.rootpath} "
            f"instead of {rootpath}{' (whose ' + ', '.join(early) + ' it could not apply)' if early else ''}; "
            f"write the option with '=': {shown}")
    old_root = _confcut_default(config)
    config._rootpath = rootpath
    config._inipath = inipath
    setattr(config, ini_attr, inicfg)
    if len(found) > 3 and hasattr(config, "_ignored_config_files"):
        config._ignored_config_files = found[3]
    config._inicache.clear()
    config._parser.extra_info["rootdir"] = str(rootpath)
    config._parser.extra_info["inifile"] = str(inipath)
    if ns.confcutdir == old_root:  # pytest derived it from the wrong config file: derive it again
        ns.confcutdir = _confcut_default(config)
    if hasattr(config, "_configure_python_path"):
        # pytest >= 8 put the wrong config's `pythonpath` on sys.path already (none: it had none);
        # its cleanup reads the setting again, so it removes these entries at the end.
        import sys

        for path in reversed(config.getini("pythonpath")):
            sys.path.insert(0, str(path))


def _confcut_default(config: pytest.Config) -> Optional[str]:
    return str(config.inipath.parent) if config.inipath is not None else str(config.rootpath)
