"""Splits: which split each case goes to, grouped by subject, stratified, and stable.

A pure function of the cases (:class:`~volprep.classes.PlanEntry`), their classes, the
``[job]`` config and the assignments already fixed (:func:`make_splits`). Two rules the
rest of volprep relies on: no subject ever straddles two splits, and once a case has a
split it keeps it. "Fixed" assignments come from a user's own split (a ``split`` column
or an nnU-Net ``splits_final.json``; they win) and from the split each case already has
in the output folder's published plan; only the remaining subjects are dealt, so adding
cases to a dataset never moves an old case, and the new ones go where the split targets
(stratified by class) most need them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from volprep.classes import PlanEntry, class_of, label_frequencies, sorted_unique
from volprep.config import JobConfig
from volprep.seeds import rng_for

_EPS = 1e-9


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts proportional to ``fractions`` that add up to ``total``.

    Ties in the remainder go to the earlier item, so the result is a pure function of its
    arguments.
    """
    exact = [total * f for f in fractions]
    counts = [math.floor(x + _EPS) for x in exact]
    order = sorted(range(len(exact)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def _controlled_round(sizes: Sequence[int], fractions: Sequence[float], columns: Sequence[int]) -> list[list[int]]:
    """Rounds the table ``sizes[i] * fractions[j]`` so rows and columns both add up.

    Each cell is its exact value rounded down or up, each row adds up to ``sizes[i]``, and
    the columns add up to ``columns`` (a largest-remainder rounding of the totals) whenever
    such a rounding exists; otherwise a column may end one over. The round-ups of a row
    are placed one at a time where the column still needs one (larger remainder first),
    moving earlier round-ups along an augmenting path when the row's columns are all full
    (bipartite matching, so the column totals are met whenever they can be).
    """
    n_rows, n_cols = len(sizes), len(fractions)
    base = [[0] * n_cols for _ in range(n_rows)]
    frac = [[0.0] * n_cols for _ in range(n_rows)]
    for i, n in enumerate(sizes):
        for j, f in enumerate(fractions):
            x = n * f
            base[i][j] = math.floor(x + _EPS)
            frac[i][j] = x - base[i][j] if x - base[i][j] > _EPS else 0.0
    need = [columns[j] - sum(base[i][j] for i in range(n_rows)) for j in range(n_cols)]
    up = [[False] * n_cols for _ in range(n_rows)]
    used = [0] * n_cols

    def augment(row: int) -> bool:
        # BFS: row takes column j; if j is full, a row rounded up in j gives it up and takes
        # another column, and so on until a column with room is reached; then flip the path.
        col_parent: dict[int, int] = {}  # column -> the row that would take it
        row_parent: dict[int, int] = {}  # row -> the column it would give up
        frontier = [row]
        while frontier:
            nxt: list[int] = []
            for r in frontier:
                for j in sorted(range(n_cols), key=lambda c: (-frac[r][c], c)):
                    if not frac[r][j] or up[r][j] or j in col_parent:
                        continue
                    col_parent[j] = r
                    if used[j] < need[j]:
                        col = j
                        while True:
                            taker = col_parent[col]
                            up[taker][col] = True
                            if taker == row:
                                break
                            col = row_parent[taker]
                            up[taker][col] = False
                        used[j] += 1
                        return True
                    for r2 in range(n_rows):
                        if up[r2][j] and r2 != row and r2 not in row_parent:
                            row_parent[r2] = j
                            nxt.append(r2)
            frontier = nxt
        return False

    order = sorted(range(n_rows), key=lambda i: (sum(1 for v in frac[i] if v), sizes[i], i))
    for i in order:
        for _ in range(sizes[i] - sum(base[i])):
            free = [j for j in range(n_cols) if frac[i][j] and not up[i][j]]
            room = [j for j in free if used[j] < need[j]]
            if room:
                j = max(room, key=lambda c: (need[c] - used[c], frac[i][c], -c))
                up[i][j] = True
                used[j] += 1
                continue
            if not augment(i):
                j = max(free, key=lambda c: (frac[i][c], -c))
                up[i][j] = True
                used[j] += 1
    return [[base[i][j] + int(up[i][j]) for j in range(n_cols)] for i in range(n_rows)]


def _stratum_key(cls: int | None) -> str | int:
    return "none" if cls is None else cls


def make_splits(
    entries: Sequence[PlanEntry],
    job: JobConfig,
    classes: Mapping[str, int | None] | None = None,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Splits the cases into ``job.splits``, grouped by subject, stratified by class.

    Every subject lands in exactly one split (unless ``fixed`` itself puts one subject's
    cases in several: a user's split is obeyed). Subjects with a case in ``fixed`` go
    where ``fixed`` says (a subject's other cases follow its fixed ones: the split most of
    them are in, ties to the first by case id). The other subjects are dealt: with
    ``job.stratify`` the subjects are grouped into strata by class (a subject's class is
    the most common class among its cases, ties going to the class of its first case by
    id); without it there is one stratum. The number of cases each stratum should give
    each split is its size times the split's fraction, rounded so that every stratum
    adds up to its size and every split to the largest-remainder rounding of
    ``len(entries) * fraction`` (so a class of one or two cases still goes where the split
    totals need it). Each stratum's subjects are then shuffled by
    ``rng_for(job.seed, "split", class)`` (``"none"`` for unlabelled cases, ``"all"``
    without stratification), the larger subjects first, and each subject not fixed is
    dealt to the split that is furthest below its target (counting the fixed ones). A
    split with fraction 0 gets no dealt subject. Without ``fixed`` nothing is pre-assigned.

    Args:
        entries: the cases, in any order.
        job: the ``[job]`` config (``seed``, ``splits``, ``stratify``).
        classes: ``{case id: class}``; by default :func:`class_of` with ``"label"``.
        fixed: ``{case id: split}`` already decided (a user's split file or column, and the
            splits the cases have in the output folder); ids that are not entries are
            ignored; every split named must be one of ``job.splits``.

    Returns:
        ``{split name: sorted case ids}`` with every split of ``job.splits``, in its order.

    Raises:
        DatasetError: two entries share a case id.
        ValueError: ``fixed`` names a split that ``job.splits`` does not have.
    """
    entries = sorted_unique(entries)
    if classes is None:
        freq = label_frequencies(entries)
        classes = {e.case_id: class_of(e, "label", freq) for e in entries}
    names = list(job.splits)
    fractions = [float(job.splits[n]) for n in names]
    out: dict[str, list[str]] = {n: [] for n in names}
    if not entries:
        return out
    fixed = {k: v for k, v in (fixed or {}).items() if k in {e.case_id for e in entries}}
    unknown = sorted(set(fixed.values()) - set(names))
    if unknown:
        raise ValueError(f"split {unknown[0]!r} is not one of the job's splits ({', '.join(names)})")

    subjects: dict[str, list[str]] = {}
    for e in entries:
        subjects.setdefault(e.subject, []).append(e.case_id)
    strata: dict[str | int, list[str]] = {}
    for subject, ids in sorted(subjects.items()):
        if job.stratify:
            votes = Counter(classes.get(i) for i in ids)
            top = max(votes.values())
            cls = next(classes.get(i) for i in ids if votes[classes.get(i)] == top)
            key = _stratum_key(cls)
        else:
            key = "all"
        strata.setdefault(key, []).append(subject)
    keys = sorted(strata, key=lambda k: (isinstance(k, str), str(k) if isinstance(k, str) else k))
    sizes = [sum(len(subjects[s]) for s in strata[k]) for k in keys]
    totals = _largest_remainder(len(entries), fractions)
    targets = _controlled_round(sizes, fractions, totals)

    # Subjects with a fixed case first: they count towards every target before any deal.
    assigned = [[0] * len(names) for _ in keys]
    assigned_total = [0] * len(names)
    placed: set[str] = set()
    for row, key in enumerate(keys):
        for subject in strata[key]:
            ids = subjects[subject]
            pinned = [fixed[i] for i in ids if i in fixed]
            if not pinned:
                continue
            pins = Counter(pinned)
            follow = next(s for s in pinned if pins[s] == max(pins.values()))
            for case_id in ids:
                j = names.index(fixed.get(case_id, follow))
                out[names[j]].append(case_id)
                assigned[row][j] += 1
                assigned_total[j] += 1
            placed.add(subject)

    open_splits = [j for j, f in enumerate(fractions) if f > 0]
    for row, key in enumerate(keys):
        rng = rng_for(job.seed, "split", key)
        order = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        order.sort(key=lambda s: -len(subjects[s]))  # stable: the shuffle breaks ties
        mine = assigned[row]
        for subject in order:
            if subject in placed:
                continue
            j = max(
                open_splits,
                key=lambda c: (targets[row][c] - mine[c], totals[c] - assigned_total[c], fractions[c], -c),
            )
            out[names[j]].extend(subjects[subject])
            mine[j] += len(subjects[subject])
            assigned_total[j] += len(subjects[subject])
    return {n: sorted(ids) for n, ids in out.items()}
