"""The wall between projects, as one rule: every route that reads or acts on a model, file, job,
completion or feedback asks `may_see` (the store's queries and serve/access.py call it), so there is
one place to read, and one to get wrong."""

from __future__ import annotations


def may_see(viewer: str | None, owner: str | None) -> bool:
    """Whether a key acting in project `viewer` may see a thing owned by project `owner`.

    `viewer` None is the operator's admin key, which sees every project; `owner` None is a thing
    shared by every project (a base model, a run folder given to `tunesmith serve`)."""
    return viewer is None or owner is None or viewer == owner
