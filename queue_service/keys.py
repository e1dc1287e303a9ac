"""Every Redis key the service uses, built in one place.

All of a wave's keys share the hash tag `{w:<wave>}` so they live in one Redis Cluster slot and
one Lua script can touch them atomically. Scripts receive the wave's key prefix and derive
bucket keys from it (same tag, same slot). Time values are milliseconds since the Unix epoch.

Per wave, prefix `glb:{w:<wave>}:`
  cfg            hash   wave configuration (times in ms); no TTL, removed by hand
  ctl            hash   live counters: seq (tickets issued), cursor (order positions decided),
                        open_seq (tickets issued before opening = pre-queue size), admitted,
                        abandoned, left, completed, expired, tokens + tokens_at (admission
                        bucket), paused, closed, cfg_version; no TTL
  reg:<b>        hash   registrant keyed hash -> ticket seq, b = first bytes of the hash mod
                        REGISTRANT_BUCKETS (small hashes stay listpack-encoded: 10 M tickets fit)
  tk:<seq/100>   hash   seq -> "registrant_hash|joined_ms|eta_at_join_s" (immutable)
  seen:<seq/100> hash   seq -> last seen ms while waiting, "A<ms>" admitted at, "X" abandoned,
                        "L" left, "C" completed
  pq             zset   pre-queue: seq scored by a uniform random number; its rank is the
                        order after opening (a uniform shuffle without moving anything)
  active         zset   admitted seq -> session expiry ms (max_active, TTL expiry)
  rl:<rule>:<id> string GCRA theoretical arrival time; PX TTL = until it no longer matters

Global (no tag; admin paths only, never on the hot path)
  glb:waves      set    ids of every wave
  glb:secret     string service secret generated once when none is configured
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "glb"
WAVES_KEY = f"{PREFIX}:waves"
SECRET_KEY = f"{PREFIX}:secret"
REGISTRANT_BUCKETS = 1 << 17
TICKET_BUCKET_SIZE = 100  # must match BUCKET_SIZE in lua/_lib.lua


@dataclass(frozen=True)
class WaveKeys:
    wave: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}:{{w:{self.wave}}}:"

    @property
    def cfg(self) -> str:
        return self.prefix + "cfg"

    @property
    def ctl(self) -> str:
        return self.prefix + "ctl"

    @property
    def prequeue(self) -> str:
        return self.prefix + "pq"

    @property
    def active(self) -> str:
        return self.prefix + "active"

    def registrant_bucket(self, bucket: int) -> str:
        return f"{self.prefix}reg:{bucket}"

    def ticket_bucket(self, seq: int) -> str:
        return f"{self.prefix}tk:{seq // TICKET_BUCKET_SIZE}"

    def seen_bucket(self, seq: int) -> str:
        return f"{self.prefix}seen:{seq // TICKET_BUCKET_SIZE}"
