"""Carry-over of standing (call-backs, issue 24, docs/callbacks.md): when a wave with
`notify.carry_over_to` closes or fills, its verified holders still waiting who opted in to be
called back keep a place in the next wave, and are told so by the channel they chose.

Who: verified holders (the registration site's account, so the same person in the next wave:
their keyed registrant hash there is computed here from the account kept encrypted with the
ticket) who opted in (they can be told, and their new place is kept while they are away).
Where, by the ended wave's `carry_over_order`:
- the next wave has not opened: `ahead` puts them first at its draw, in their order here (the
  called ones first, then the line as the cursor would have reached it); `prequeue` puts them
  into its pre-queue, drawn with everyone else;
- the next wave has opened already: at the back of its line, in their order here (the standing
  they had cannot be given without taking it from people already waiting there); the
  operator is warned (a log line and the `gelombang_callback_carried_total` metric).
- the next wave closed, full, unknown, or not verified: nobody moves (refused).
Run by the admission loop of whichever process finds the ended wave (one at a time: a lease),
in batches; a batch tried twice moves nobody twice (the next wave refuses a second place).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from queue_service import metrics
from queue_service.callbacks import Callbacks
from queue_service.errors import ApiError, UnknownWave
from queue_service.identity import signed_account
from queue_service.registry import WaveRegistry, WaveRuntime
from queue_service.service import prequeue_scores
from queue_service.store import Store
from queue_service.tickets import TicketCodec, new_stamps

log = logging.getLogger(__name__)

OWNER = secrets.token_hex(8)
LEASE_MS = 60_000
BATCH = 500


class CarryOver:
    def __init__(
        self, store: Store, registry: WaveRegistry, callbacks: Callbacks, codec: TicketCodec
    ) -> None:
        self._store = store
        self._registry = registry
        self._callbacks = callbacks
        self._codec = codec
        self._finished: set[str] = set()

    async def run_if_due(self, runtime: WaveRuntime) -> int:
        """When the wave has ended: carry its holders over (if it says so and nobody has yet),
        then delete every contact it still holds (their tickets ended with it: nobody will
        be called in it any more). Holders moved."""
        counts, wave = runtime.counts, runtime.config.id
        if counts is None or counts.state not in ("closed", "full") or wave in self._finished:
            return 0
        moved = 0
        if runtime.config.notify.carry_over_to:
            carried = await self._carry(runtime)
            if carried is None:
                return 0  # another process is carrying them: it forgets the contacts after
            moved = carried
        if await self._store.forget_contacts(wave):
            self._finished.add(wave)
        return moved

    async def _carry(self, runtime: WaveRuntime) -> int | None:
        """Holders moved; None while another process holds the lease."""
        config, wave = runtime.config, runtime.config.id
        status, position = await self._store.carry_begin(wave, OWNER, LEASE_MS)
        if status == "done":
            return 0
        if status != "carrying":
            return None
        try:
            target = await self._registry.get(config.notify.carry_over_to)
        except ApiError:
            target = None
        if target is None or not target.config.verified_joins:
            log.warning(
                "wave %s ended; its carry_over_to %s is unknown or takes no verified joins: "
                "nobody is carried over",
                wave, config.notify.carry_over_to,
            )  # fmt: skip
            await self._store.carry_done(wave, OWNER, position, True, [])
            metrics.callback_carried.labels(wave, "refused").inc()
            return 0
        moved = 0
        if position == 0:  # the called holders were at the front: first
            called = await self._store.called_now(wave)
            moved += await self._batch(runtime, target, called, 0, done=False)
        while True:
            seqs, total = await self._store.carry_candidates(wave, position, BATCH)
            position += len(seqs)
            finished = not seqs or position >= total
            moved += await self._batch(runtime, target, seqs, position, done=finished)
            if finished:
                break
        log.info(
            "wave %s ended: %d verified holders carried over to %s (%s)",
            wave, moved, target.config.id, config.notify.carry_over_order,
        )  # fmt: skip
        return moved

    async def _batch(
        self,
        runtime: WaveRuntime,
        target: WaveRuntime,
        seqs: Sequence[int],
        position: int,
        *,
        done: bool,
    ) -> int:
        wave, cipher = runtime.config.id, self._callbacks.cipher
        held = await self._store.carry_out(wave, OWNER, seqs) if seqs else []
        if held is None:
            raise LeaseLost(wave)
        items: list[list[str | int]] = []
        origins: list[int] = []
        stamps = new_stamps(len(held))
        scores = prequeue_scores(len(held))
        next_wave, next_uid = target.config.id, target.uid
        for (seq, stamp, sealed_account, record), new_stamp, score in zip(
            held, stamps, scores, strict=True
        ):
            account = cipher.open(
                sealed_account, cipher.associated(wave, runtime.uid, stamp, "account")
            )
            language, kind, _hash, _bucket, _changes, sealed = record.split("|", 5)
            contact = cipher.open(sealed, cipher.associated(wave, runtime.uid, stamp))
            if account is None or contact is None:
                continue  # not this deployment's key: nobody can be carried on it
            registrant = signed_account(account.decode(), target.config.id_kind)
            rhash, bucket = self._codec.registrant_hash(next_wave, registrant)
            code = self._callbacks.codes.code(next_wave, next_uid, new_stamp)
            code_hash, code_bucket = self._callbacks.codes.digest(code)
            items.append(
                [
                    rhash,
                    bucket,
                    new_stamp,
                    f"{language}|{kind}|{code_hash}|{code_bucket}",
                    cipher.seal(contact, cipher.associated(next_wave, next_uid, new_stamp)),
                    cipher.seal(
                        account, cipher.associated(next_wave, next_uid, new_stamp, "account")
                    ),
                    score,
                    seq,
                ]
            )
            origins.append(seq)
        results: list[str] = []
        if items:
            try:
                state, results = await self._store.carry_in(
                    next_wave, runtime.config.notify.carry_over_order, wave, items
                )
            except UnknownWave:
                results = ["refused"] * len(items)
            else:
                if state not in ("scheduled", "prequeue") and any(
                    r.startswith("moved") for r in results
                ):
                    log.warning(
                        "wave %s: %s has opened already; carried holders join the back of its "
                        "line",
                        wave, next_wave,
                    )  # fmt: skip
        moved = [seq for seq, r in zip(origins, results, strict=True) if r.startswith("moved")]
        for result in ("moved", "held", "refused"):
            count = sum(1 for r in results if r.startswith(result))
            if count:
                metrics.callback_carried.labels(wave, result).inc(count)
        gone = [seq for seq, r in zip(origins, results, strict=True) if r != "refused"]
        if not await self._store.carry_done(wave, OWNER, position, done, gone):
            raise LeaseLost(wave)
        return len(moved)


class LeaseLost(Exception):
    """Another process took the carry-over over (this one was too slow): it goes on there."""
