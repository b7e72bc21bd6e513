"""Pure: many nodes' states in one line ("31 running, 1 unknown: bn17").

At 32 nodes a table of identical rows hides the one that matters; pdsh's ``dshbak -c`` folds
identical output the same way. The most common state is given as a count only, every other
one with the nodes in it (the first few, then how many more), so the odd node is named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

NAMES_SHOWN = 4
"""Nodes named per state before "+N more" (the full list is behind --nodes and in --json)."""


def fold(pairs: Iterable[tuple[str, str]], *, names_shown: int = NAMES_SHOWN) -> str:
    """``(node, state)`` pairs -> one line, states by count (most first, ties by first appearance)."""
    pairs = list(pairs)
    if not pairs:
        return "no nodes"
    order: dict[str, list[str]] = {}
    for node, state in pairs:
        order.setdefault(state, []).append(node)
    counts = Counter({s: len(ns) for s, ns in order.items()})
    ranked = sorted(order, key=lambda s: (-counts[s], list(order).index(s)))
    parts = []
    for i, state in enumerate(ranked):
        nodes = order[state]
        if i == 0:  # the common state: a count; the others name their nodes
            parts.append(f"{len(nodes)} {state}")
            continue
        parts.append(f"{len(nodes)} {state}: {name_list(nodes, names_shown=names_shown)}")
    return ", ".join(parts)


def name_list(nodes: list[str], *, names_shown: int = NAMES_SHOWN) -> str:
    """``n1, n2, n3, n4 +5 more``."""
    more = f" +{len(nodes) - names_shown} more" if len(nodes) > names_shown else ""
    return ", ".join(nodes[:names_shown]) + more


def node_state_label(state: str, exit_code: int | None) -> str:
    """How ``ps`` names one node's state: ``running``, ``exited 0``, ``unknown``."""
    return state if exit_code is None else f"{state} {exit_code}"


def fold_rows(rows: list[list[str]] | list[tuple[str, ...]]) -> list[list[str]]:
    """Pure: table rows whose first cell is a node and whose other cells are equal become one row
    ("31 nodes: n1, n2, n3, n4 +27 more"), largest group first (``preflight`` without --nodes)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for row in rows:
        groups.setdefault(tuple(row[1:]), []).append(row[0])
    out = []
    for cells, labels in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        who = labels[0] if len(labels) == 1 else f"{len(labels)} nodes: {name_list(labels)}"
        out.append([who, *cells])
    return out
