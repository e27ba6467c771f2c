"""Work kept by the identity of what it was made from: a repeat of the same object is not worked again.

The doors answer repeats from the result cache, which hands back the same Arrow table each time; what is made
from that table (its JSON body, its DataRow bytes, its columns picked and renamed) is kept here by the table's
identity rather than made again. The objects are held with their entry, so an id cannot be taken by another
object while the entry stands; a full memo is emptied whole (it holds the few answers being repeated now).
"""

from __future__ import annotations


class ByIdentity:
    def __init__(self, size: int = 64):
        self.size = size
        self._items: dict[tuple, tuple[object, object]] = {}

    def get(self, owner, key: tuple = ()):
        """What was kept for this very object (and `key`), or None. On the hot path of every repeat: two
        lookups, no loops."""
        hit = self._items.get((id(owner), key))
        return hit[1] if hit is not None and hit[0] is owner else None

    def put(self, owner, key: tuple, value):
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[(id(owner), key)] = (owner, value)
        return value
