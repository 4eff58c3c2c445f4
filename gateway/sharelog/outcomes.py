"""Each outcome checked against its share along a walk of the chain, as `logs verify` walks a
log and `logs verify --export` an export file."""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import NoReturn, Protocol

# The seq and share id where the problem shows, and what it is.
OutcomeFailure = Callable[[int, str, str], NoReturn]


def describe(seq: int, share_id: str | None) -> str:
    return f"seq {seq}" + (f" (share {share_id})" if share_id else "")


class WalkedEntries(Protocol):
    """The entries a walk has passed, looked up only to say what a link that fails points at:
    the walk itself keeps no more than the shares still open."""

    def share_at(self, seq: int) -> tuple[str, str] | None:
        """The share id and decision of the share at `seq`; None where that entry is none."""

    def first_outcome_of(self, share_seq: int, before: int) -> int | None:
        """The seq of the first outcome linked to `share_seq` that comes before `before`."""


class OutcomeLinks:
    """The shares a walk has opened and the outcomes that close them. An outcome belongs to an
    earlier shared record with its share id, one per share, and an `open` or `close` checkpoint
    comes only once every share is closed: what breaks that is reported through `fail`.

    A walk may start past the chain's first entry (a prune's cut, an export's first entry):
    an outcome linked to a share before `start` closes none the walk has seen.
    """

    def __init__(self, entries: WalkedEntries, fail: OutcomeFailure) -> None:
        self.entries = entries
        self.fail = fail
        self.start = 1  # the first seq of the walk
        # Shared records whose outcome has not come yet, by seq and by share id.
        self.open_seqs: dict[int, str] = {}
        self.open_ids: dict[str, int] = {}
        # A second outcome is written unlinked. Only the shares whose id an unlinked outcome
        # carries (few: those pruned in flight or never recorded as shared), known before the
        # walk, are remembered once closed, by share id, as (share seq, outcome seq): every
        # closed share would be every share id the walk reads.
        self.unlinked_ids: Set[str] = frozenset()
        self.closed: dict[str, tuple[int | None, int]] = {}

    def begin(self, start: int, unlinked_ids: Set[str]) -> None:
        """The walk starts at seq `start`; `unlinked_ids`: the share ids of its unlinked
        outcomes, looked for before it."""
        self.start = start
        self.unlinked_ids = unlinked_ids

    def shared(self, seq: int, share_id: str) -> None:
        """A shared record, open until its outcome comes."""
        self.open_seqs[seq] = share_id
        self.open_ids[share_id] = seq

    def checkpoint(self, seq: int, reason: str) -> None:
        if reason in ("open", "close") and self.open_seqs:
            self._left_open(seq, reason)

    def outcome(self, seq: int, share_id: str, share_seq: int | None) -> None:
        """An outcome belongs to an earlier shared record with its share id, one per share."""
        where = describe(seq, share_id)
        if share_seq is None:
            # Legitimately unlinked: the share was pruned away first, or it was never recorded
            # as shared. An open share of the chain is none of these: the gateway found no row
            # for it in `pending_outcomes`, and it reads as pending.
            open_seq = self.open_ids.get(share_id)
            if open_seq is not None:
                self.fail(
                    seq,
                    share_id,
                    f"outcome {where} is not linked to its share, which is open at seq "
                    f"{open_seq}: its row in pending_outcomes was removed or altered, and the "
                    "share reads as pending",
                )
            self._note(seq, share_id, None)
            return
        if share_seq < self.start:
            # Its share went with a prune, or lies before the walk; the outcome stays, and is
            # still its only one.
            self._note(seq, share_id, share_seq)
            return
        if self.open_seqs.get(share_seq) == share_id:
            del self.open_seqs[share_seq]
            if self.open_ids.get(share_id) == share_seq:
                del self.open_ids[share_id]
            self._note(seq, share_id, share_seq)
            return
        self.fail(seq, share_id, f"outcome {where} {self._misnamed(share_id, seq, share_seq)}")

    def _left_open(self, seq: int, reason: str) -> NoReturn:
        """A gateway closes every open share (as `unknown`) before it seals `open` or `close`:
        one still open went without, because its row in pending_outcomes was removed."""
        share_seq, share_id = next(iter(self.open_seqs.items()))
        self.fail(
            share_seq,
            share_id,
            f"{describe(share_seq, share_id)} has no outcome before the {reason} checkpoint at "
            f"seq {seq}, which closes every open share: its row in pending_outcomes was "
            "removed or altered, and the share reads as pending",
        )

    def _note(self, seq: int, share_id: str, share_seq: int | None) -> None:
        """Notes the outcome of a share (unlinked: `share_seq` None), failing if it already had
        one. The gateway submits one per share and links only the first, so a second is
        unlinked: only the share ids of unlinked outcomes need remembering."""
        if share_id not in self.unlinked_ids:
            return
        first_seq, first_outcome = self.closed.setdefault(share_id, (share_seq, seq))
        if first_outcome == seq:
            return
        second = "a second, unlinked outcome" if share_seq is None else "a second outcome"
        of = "whose first outcome" if first_seq is None else f"of seq {first_seq}, whose outcome"
        self.fail(
            seq,
            share_id,
            f"outcome {describe(seq, share_id)} is {second} {of} is at seq {first_outcome}: "
            "the gateway writes one per share, and `logs query` shows only the first",
        )

    def _misnamed(self, share_id: str, seq: int, share_seq: int) -> str:
        """What the share an outcome is linked to is instead of its own open share."""
        if share_seq >= seq:
            return f"is linked to seq {share_seq}, which does not come before it"
        found = self.entries.share_at(share_seq)
        if found is None:
            return f"is linked to seq {share_seq}, which is not a share"
        other, decision = found
        if decision != "shared":
            return f"is linked to seq {share_seq}, which was not shared ({decision})"
        if other != share_id:
            return f"is linked to seq {share_seq}, which is share {other}"
        earlier = self.entries.first_outcome_of(share_seq, seq)
        return f"is a second outcome of seq {share_seq}, whose outcome is at seq {earlier}"
