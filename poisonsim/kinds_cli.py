"""``poisonsim kinds`` and ``poisonsim check``: what can be put in a scenario, and whether each kind conforms.

poisonsim kinds                     every concept and its kinds
poisonsim kinds attack              each attack kind and its first doc line
poisonsim kinds attack badnets      its keys: default, doc, allowed values
poisonsim kinds --plugin my.module  plug-in kinds too (as a scenario's plugins = [...])
poisonsim check [CONCEPT [KIND]]    run the check suite on them
"""

from __future__ import annotations

import argparse

from poisonsim.capabilities import CAPABILITIES
from poisonsim.config import ConfigError
from poisonsim.registry import REGISTRIES, UnknownKind, import_plugins, toml_literal


def add_parsers(commands) -> None:
    """Add ``kinds`` and ``check`` to the CLI's subcommands."""
    for name, handler, help_text in (
        ("kinds", _kinds, "list kinds and their scenario keys"),
        ("check", _check, "run the check suite on kinds (plug-ins included)"),
    ):
        parser = commands.add_parser(name, help=help_text, description=__doc__.split("\n\n")[0])
        parser.add_argument("concept", nargs="?", choices=sorted(REGISTRIES), help="source, model, attack, ...")
        parser.add_argument("kind", nargs="?", help="one kind of that concept")
        parser.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="MODULE",
            help="import a module that registers kinds first (repeatable)",
        )
        parser.set_defaults(handler=handler)


def selected(args: argparse.Namespace) -> list:
    """The kinds the arguments name (all of them by default)."""
    try:
        import_plugins(args.plugin)
        registries = [REGISTRIES[args.concept]] if args.concept else list(REGISTRIES.values())
        if args.kind:
            return [registries[0].get(args.kind)]
    except (ValueError, UnknownKind) as exc:
        raise ConfigError(str(exc)) from None
    return [kind for registry in registries for kind in registry.load_all().values()]


def _kinds(args: argparse.Namespace) -> int:
    kinds = selected(args)
    if args.kind:
        kind = kinds[0]
        print(f"{kind.concept} kind {kind.name!r}: {kind.doc}")
        for tag in sorted(kind.factory.offers):
            print(f"  offers {tag}: {CAPABILITIES[tag]}")
        if kind.requires:
            print(f"  needs a model or source that offers: {', '.join(sorted(kind.requires))}")
        for param in kind.keys.values():
            print(f"  {param.describe()}")
            if param.type == "kind":  # the keys of the default kind it names, as written in its table
                for nested in param.key.kinds.get(param.default).keys.values():
                    print(f"    {param.path}.{nested.describe()}")
        return 0
    concept = None
    for kind in kinds:
        if kind.concept != concept:
            concept = kind.concept
            print(f"{concept}:")
        print(f"  {kind.name:<24} {kind.doc}")
    return 0


def kinds_markdown(concept: str) -> str:
    """Every registered kind of ``concept`` as the documentation writes it: its doc line, what it offers and
    needs, and a table of its scenario keys (default, what is allowed, meaning), from the registry itself.

    >>> print(kinds_markdown("trigger").split("\\n\\n")[0])
    ## `blend`
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    parts = []
    for kind in REGISTRIES[concept].load_all().values():
        lines = [f"## `{kind.name}`", "", kind.doc or "(no description)", ""]
        lines += [f"- offers `{tag}`: {CAPABILITIES[tag]}" for tag in sorted(kind.factory.offers)]
        if kind.requires:
            lines.append(f"- needs a model or source that offers: {', '.join(f'`{t}`' for t in sorted(kind.requires))}")
        params = [(param.path, param) for param in kind.keys.values()]
        for param in kind.keys.values():
            if param.type == "kind":  # the keys of the default kind it names, as written in its table
                params += [(f"{param.path}.{n.path}", n) for n in param.key.kinds.get(param.default).keys.values()]
        if lines[-1]:
            lines.append("")
        if params:
            lines += ["| key | default | allowed | meaning |", "|---|---|---|---|"]
            lines += [
                f"| `{path}` | `{toml_literal(p.default)}` | {cell(p.expected())} | {cell(p.key.doc)} |"
                for path, p in params
            ]
        else:
            lines.append("No keys.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _check(args: argparse.Namespace) -> int:
    from poisonsim.checks import yield_checks

    failed = 0
    for kind in selected(args):
        for check in yield_checks(kind):
            try:
                check(kind)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the suite goes on
                failed += 1
                print(f"FAIL {kind.concept}:{kind.name} {check.__name__}: {type(exc).__name__}: {exc}")
            else:
                print(f"ok   {kind.concept}:{kind.name} {check.__name__}")
    return 1 if failed else 0
