"""The public status board: every wave's state, people waiting, admitted so far, quota left, the
current pace and the next opening, as JSON (`GET /api/v1/status`) and as a page in Indonesian
and English (`GET /status?lang=id|en`). Built at most once every STATUS_CACHE_S per process and
cacheable for as long, so it can sit behind a CDN and take a newsroom's traffic: a million
readers cost each process one build per interval.

No personal data: counts and settings only.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import html
import time
from dataclasses import dataclass
from typing import Any

from queue_service.errors import NotFound
from queue_service.registry import WaveRegistry
from queue_service.service import QueueService
from queue_service.store import Store
from queue_service.waves import iso_utc

STATUS_CACHE_S = 5.0
PACE_WINDOW_S = 60.0
PACE_MIN_SPAN_S = 4.0
LANGUAGES = ("id", "en")
COLUMNS = ("wave", "state", "waiting", "admitted", "quota_left", "pace", "opens", "closes", "proof")
STATE_ORDER = {"open": 0, "paused": 1, "prequeue": 2, "scheduled": 3, "full": 4, "closed": 5}

TEXTS: dict[str, dict[str, str]] = {
    "id": {
        "title": "Status antrean",
        "intro": "Keadaan setiap gelombang pendaftaran, diperbarui setiap beberapa detik.",
        "wave": "Gelombang",
        "state": "Status",
        "waiting": "Menunggu",
        "admitted": "Sudah masuk",
        "quota_left": "Sisa kuota",
        "pace": "Laju sekarang",
        "per_min": "orang/menit",
        "opens": "Dibuka",
        "closes": "Ditutup",
        "next": "Pembukaan berikutnya",
        "none": "Tidak ada pembukaan terjadwal.",
        "unlimited": "tanpa batas",
        "proof": "Bukti",
        "ledger": "buku besar",
        "updated": "Diperbarui",
        "other": "English",
        "empty": "Belum ada gelombang.",
        "scheduled": "terjadwal",
        "prequeue": "pra-antrean",
        "open": "dibuka",
        "paused": "dijeda",
        "full": "kuota penuh",
        "closed": "ditutup",
    },
    "en": {
        "title": "Queue status",
        "intro": "Every registration wave as it stands, refreshed every few seconds.",
        "wave": "Wave",
        "state": "State",
        "waiting": "Waiting",
        "admitted": "Admitted",
        "quota_left": "Quota left",
        "pace": "Current pace",
        "per_min": "people/min",
        "opens": "Opens",
        "closes": "Closes",
        "next": "Next opening",
        "none": "No opening scheduled.",
        "unlimited": "no limit",
        "proof": "Proof",
        "ledger": "ledger",
        "updated": "Updated",
        "other": "Bahasa Indonesia",
        "empty": "No waves yet.",
        "scheduled": "scheduled",
        "prequeue": "pre-queue",
        "open": "open",
        "paused": "paused",
        "full": "quota reached",
        "closed": "closed",
    },
}


@dataclass
class _Built:
    at: float
    body: dict[str, Any]
    etag: str
    pages: dict[str, str]


class StatusBoard:
    def __init__(self, store: Store, service: QueueService, registry: WaveRegistry) -> None:
        self._store = store
        self._service = service
        self._registry = registry
        self._built: _Built | None = None
        self._samples: dict[str, collections.deque[tuple[float, int]]] = {}
        """Wave -> (when, admitted so far) at each build, over about PACE_WINDOW_S."""
        self._lock = asyncio.Lock()

    def _pace_per_min(self, wave: str, admitted: int) -> float | None:
        """Admissions per minute over about the last minute, from this board's own samples of
        the admitted count (None until two samples PACE_MIN_SPAN_S apart exist)."""
        now = time.monotonic()
        samples = self._samples.setdefault(wave, collections.deque())
        samples.append((now, admitted))
        while len(samples) > 2 and now - samples[1][0] >= PACE_WINDOW_S:
            samples.popleft()
        first_at, first_admitted = samples[0]
        if now - first_at < PACE_MIN_SPAN_S:
            return None
        return round(max(0, admitted - first_admitted) * 60 / (now - first_at), 1)

    async def current(self) -> tuple[dict[str, Any], str]:
        """(the board as JSON, its ETag), at most STATUS_CACHE_S old."""
        built = await self._fresh()
        return built.body, built.etag

    async def page(self, lang: str) -> tuple[str, str]:
        built = await self._fresh()
        if lang not in built.pages:
            built.pages[lang] = render(built.body, lang)
        return built.pages[lang], f'"{lang}-{built.etag.strip(chr(34))}"'

    async def _fresh(self) -> _Built:
        built = self._built
        if built is not None and time.monotonic() - built.at < STATUS_CACHE_S:
            return built
        async with self._lock:  # requests arriving together share one build
            built = self._built
            if built is None or time.monotonic() - built.at >= STATUS_CACHE_S:
                body = await self._build()
                digest = hashlib.sha256(repr(body["waves"]).encode()).hexdigest()[:24]
                built = self._built = _Built(time.monotonic(), body, f'"{digest}"', {})
            return built

    async def _build(self) -> dict[str, Any]:
        ids = await self._store.wave_ids()
        rows = await asyncio.gather(*(self._row(wave) for wave in ids))
        waves = sorted(
            (row for row in rows if row is not None),
            key=lambda r: (STATE_ORDER.get(r["state"], 9), r["opens_at"], r["wave"]),
        )
        now = time.time()
        upcoming = [
            (row["opens_at"], row["wave"])
            for row in waves
            if row["state"] in ("scheduled", "prequeue")
        ]
        next_opening = None
        if upcoming:
            opens_at, wave = min(upcoming)
            next_opening = {"wave": wave, "opens_at": opens_at}
        return {
            "generated_at": iso_utc(now),
            "refresh_s": int(STATUS_CACHE_S),
            "next_opening": next_opening,
            "waves": waves,
        }

    async def _row(self, wave: str) -> dict[str, Any] | None:
        try:
            runtime = await self._registry.get(wave)
            counts = await self._service.counts(runtime)
        except NotFound:  # deleted meanwhile (UnknownWave)
            return None
        config = runtime.config
        pace = self._pace_per_min(config.id, counts.admitted)
        return {
            "wave": config.id,
            "title": config.title,
            "state": counts.state,
            "waiting": counts.waiting + counts.prequeue,
            "admitted": counts.admitted,
            "quota": config.quota or None,
            "quota_left": max(0, config.quota - counts.admitted) if config.quota else None,
            "admit_rate": config.admit_rate,
            "pace_per_min": pace,
            "prequeue_opens_at": iso_utc(config.opens_at - config.prequeue_s),
            "opens_at": iso_utc(config.opens_at),
            "closes_at": iso_utc(config.closes_at),
            "ledger": f"/api/v1/waves/{config.id}/ledger",
        }


def _number(value: int | None, lang: str) -> str:
    if value is None:
        return TEXTS[lang]["unlimited"]
    text = f"{value:,}"
    return text.replace(",", ".") if lang == "id" else text


def _time(iso: str) -> str:
    return iso.replace("T", " ").split("+")[0][:16] + " UTC"


def render(board: dict[str, Any], lang: str) -> str:
    """The board as a small page: no script, readable on any phone, refreshes itself."""
    t = TEXTS[lang]
    e = html.escape
    other = "en" if lang == "id" else "id"
    rows = []
    for w in board["waves"]:
        pace = "–"
        if w["pace_per_min"] is not None:
            pace = f"{w['pace_per_min']:g} {t['per_min']}"
            pace = pace.replace(".", ",") if lang == "id" else pace
        rows.append(
            "<tr>"
            f"<th scope=row>{e(w['title'] or w['wave'])}<br><small>{e(w['wave'])}</small></th>"
            f"<td class=state-{e(w['state'])}>{e(t.get(w['state'], w['state']))}</td>"
            f"<td>{_number(w['waiting'], lang)}</td>"
            f"<td>{_number(w['admitted'], lang)}</td>"
            f"<td>{_number(w['quota_left'], lang)}</td>"
            f"<td>{e(pace)}</td>"
            f"<td>{e(_time(w['opens_at']))}</td>"
            f"<td>{e(_time(w['closes_at']))}</td>"
            f'<td><a href="{e(w["ledger"])}">{t["ledger"]}</a></td>'
            "</tr>"
        )
    nxt = board["next_opening"]
    next_text = f"{e(nxt['wave'])}: {e(_time(nxt['opens_at']))}" if nxt is not None else t["none"]
    table = (
        "<table><thead><tr>"
        + "".join(f"<th scope=col>{t[k]}</th>" for k in COLUMNS)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else f"<p>{t['empty']}</p>"
    )
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{board["refresh_s"] * 3}">
<title>{t["title"]}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1rem;color:#1a1a1a}}
table{{border-collapse:collapse;width:100%;font-size:.95rem}}
th,td{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}}
td.state-open{{color:#0a6b2b;font-weight:600}} td.state-closed,td.state-full{{color:#777}}
small{{color:#666}}
</style></head><body>
<p><a href="?lang={other}">{t["other"]}</a></p>
<h1>{t["title"]}</h1>
<p>{t["intro"]}</p>
<p><strong>{t["next"]}:</strong> {next_text}</p>
{table}
<p><small>{t["updated"]}: {e(_time(board["generated_at"]))}</small></p>
</body></html>
"""
