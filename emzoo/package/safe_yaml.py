"""A package's YAML, read with its aliases bounded: a "billion laughs" rdf.yaml is refused at once.

YAML aliases (``*name``) repeat an anchored node (``&name``); nested, a few of them stand for
billions of nodes, which any reader that walks the content (bioimageio.spec's among them) takes
until it is killed. :func:`check_yaml` composes the node graph (aliases stay shared, so that is
linear in the text) and counts the nodes the content would have with every alias expanded.
"""

from __future__ import annotations

from typing import Any

import yaml

from emzoo.errors import PackageError

MAX_NODES = 1_000_000  # a model description has a few thousand; aliases may not multiply past this
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int | None:
    """Nodes under ``root`` with every alias expanded, or None when above ``limit`` or recursive."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > limit:
                return None
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            return None  # an alias inside its own anchor: an endless structure
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_yaml(text: str, source: str) -> None:
    """:class:`PackageError` unless ``text`` is YAML whose aliases expand to at most ``MAX_NODES``."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise PackageError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from e
    except RecursionError:
        raise PackageError(f"{source}: the YAML is nested too deeply to be a model description") from None
    if node is not None and expanded_size(node) is None:
        raise PackageError(
            f"{source}: the YAML's aliases (*name) expand to more than {MAX_NODES:,} nodes or into "
            "themselves (a 'billion laughs' file); refused"
        )


def safe_load(text: str, source: str) -> Any:
    """The content of ``text``, after :func:`check_yaml`."""
    check_yaml(text, source)
    return yaml.load(text, Loader=_LOADER)
