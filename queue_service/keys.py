"""Every Redis key the service uses, built in one place.

All of a wave's keys share the hash tag `{w:<wave>}` so they live in one Redis Cluster slot and
one Lua script can touch them atomically. Scripts receive the wave's key prefix and derive
bucket keys from it (same tag, same slot). Time values are milliseconds since the Unix epoch.

Per wave, prefix `glb:{w:<wave>}:`
  cfg            hash   wave configuration (times in ms), plus `uid` (random at creation: tickets
                        are signed with it) and `version` (bumped by every change); no TTL
  ctl            hash   live counters: seq (tickets issued), cursor (order positions decided),
                        open_seq (tickets issued before opening = pre-queue size), admitted,
                        abandoned, left, completed, expired, tokens + tokens_at (admission
                        bucket), paused, closed, step_at + down_ms (last admission step, and the
                        outage time that does not count toward abandonment), left_base
                        (entries trimmed from the left list), inc + inc_run +
                        incs (the incarnation tickets are issued in, the Redis run id it began
                        under, and the ended ones as "id:last_seq,..."); no TTL
  reg:<b>        hash   registrant keyed hash -> ticket seq, b = first bytes of the hash mod
                        REGISTRANT_BUCKETS (small hashes stay listpack-encoded: 10 M tickets fit)
  tk:<seq/100>   hash   seq -> "registrant_hash|joined_ms|eta_at_join_s|stamp|reg_bucket"
                        (immutable; stamp: random, in the ticket too, so a number issued
                        again after a rollback never names the earlier holder)
  seen:<seq/100> hash   seq -> the deadline of the next poll (service ms) while waiting,
                        "A<ms>" admitted at (unclaimed), "S<ms>" admitted and claimed,
                        "C<ms>" completed (protocol.SeenMark)
                        A ticket that left, was abandoned or whose session expired is
                        reclaimed: its reg, tk and seen entries are deleted (lua/_lib.lua)
  pq             zset   pre-queue: seq scored by a uniform random number; its rank is the
                        order after opening (a uniform shuffle without moving anything);
                        deleted once the admission cursor has passed all of it
  active         zset   admitted seq -> until when it holds its max_active slot (ms): the
                        holder's poll deadline until claimed, then admission + session_ttl
  left           list   seqs of tickets that left while waiting, in order (processes read it
                        from the admission step, so no process answers a left ticket as
                        waiting); its head is trimmed once the cursor has passed those
                        tickets, ctl.left_base counting what was trimmed (positions stay
                        absolute)
  revocations    stream jti of ended sessions (field "jti"), ids in Redis time; trimmed to
                        session_ttl (the feed GET /api/v1/waves/{wave}/revoked that origin
                        guards read: ids only grow, so a reader resuming after the last id
                        it saw misses nothing)
  eq:<token>     string an enqueue token already used to join (it proves nothing again); PX
                        until the token expires
  rl:<rule>:<id> string GCRA theoretical arrival time of a join rule; PX TTL = until it no
                        longer matters

  Public proof (docs/audit.md); kept with the wave, no TTL, no personal data in any of them
  draw           hash   the pre-queue draw: seed (secret until the draw: never served before
                        `drawn_ms` is set), commitment (SHA-256 of the seed, public from the
                        wave's creation), committed_ms, prequeue (N, at the draw), drawn_ms,
                        owner + lease_until (the process drawing), legacy (the wave was already
                        admitting when this version first saw it: no verifiable draw)
  ledger         list   the admission ledger, one canonical line per entry, append only
                        (queue_service/ledger.py): genesis, config, draw and one ticket entry
                        per admission-order position the cursor decided, in order
  ledger:state   hash   cfg (the admission settings the last config entry recorded), sealed
                        (entries covered by the stored hash chain), head (hex chain hash after
                        entry sealed-1)
  ledger:cp      list   the chain hash after each full page of ledger.PAGE_SIZE entries (entry k
                        of this list: after ledger entry (k+1)*PAGE_SIZE-1): a served page is
                        checked against it, and an entry changed in Redis shows as a break
  gone:<seq/100> hash   seq -> why a waiting ticket was given up ('left'), kept until the
                        admission cursor passes it and records the reason in the ledger (the
                        ticket's own state is reclaimed at once)
  bind:<jti>     string the browser binding of a one-time admission token (verify route); PXAT
                        the token's expiry

  Call-backs (docs/callbacks.md): a holder who opted in may leave the line and be called
  back; their seen value carries a mark (protocol.SeenMark: O, N, K, R) instead of a deadline
  ct:<seq/100>   hash   seq -> "lang|kind|return code hash|its rc bucket|changes|ciphertext":
                        the contact, AES-256-GCM under the deployment's contact key with the
                        wave and ticket as associated data (contacts.py); deleted when the
                        ticket ends or is admitted (lua/_lib.lua callback_forget)
  rc:<b>         hash   return code hash -> seq, b = the hash's first bytes mod
                        contacts.RETURN_BUCKETS: the one-time return link's index; deleted on
                        first use and with the ticket. The code itself is never stored
  cb             zset   opted-in holders not told yet, seq -> admission order (the notify step
                        takes those below cursor + lead: lua/notify.lua)
  cb:pq          set    opted-in pre-queue holders whose order is not drawn yet (given their
                        rank into cb by the first notify step after the draw)
  called         zset   holders the line reached while away, seq -> end of their return window
                        (service ms); at its end, not back: skipped as abandoned
  rt             list   holders who came back after being called, admitted first (admit.lua)
  ob             stream the outbox: seq, stamp, kind (near, turn, carried), until (wall ms);
                        read through the consumer group "senders" (outbox.py); a message is
                        deleted once delivered (so its length is the backlog). No contact in it
  ob:try         hash   "<entry id>:n" -> failed tries, "<entry id>:at" -> next try (ms)
  ob:dead        stream messages given up after their last try (seq, kind, channel, reason),
                        trimmed to about 10,000; no contact in them
  ca:<seq/100>   hash   seq -> the verified account of a holder of a wave that carries its
                        standing over (`notify.carry_over_to`), encrypted like a contact;
                        deleted with the ticket
  carry          hash   the carry-over of a closed or full wave: owner + lease_until (the
                        process moving holders), position (how far along the line it has
                        moved), moved (holders), done (ms), forgotten (ms: every contact the
                        ended wave still held was deleted then)
  carried        list   tickets carried over ahead of everyone into this wave's pre-queue, in
                        their order: the draw puts them first (draw.py); public in the ledger's
                        `carry` entries

Global (no tag; admin paths only, never on the hot path)
  glb:waves      set    ids of every wave
  glb:secret     string service secret generated once when none is configured
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WAVE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # used with fullmatch: no trailing newline
"""What a wave id may be: it stands inside every key of the wave."""
PREFIX = "glb"
WAVES_KEY = f"{PREFIX}:waves"
SECRET_KEY = f"{PREFIX}:secret"
REGISTRANT_BUCKETS = 1 << 17
TICKET_BUCKET_SIZE = 100  # must match BUCKET_SIZE in lua/_lib.lua


@dataclass(frozen=True, slots=True)
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

    @property
    def left(self) -> str:
        return self.prefix + "left"

    @property
    def revocations(self) -> str:
        return self.prefix + "revocations"

    @property
    def fixed(self) -> list[str]:
        """The keys every script is called with, in the order lua/_lib.lua names them."""
        return [self.cfg, self.ctl, self.prequeue, self.active, self.left, self.revocations]

    @property
    def draw(self) -> str:
        return self.prefix + "draw"

    @property
    def ledger(self) -> str:
        return self.prefix + "ledger"

    @property
    def ledger_checkpoints(self) -> str:
        return self.prefix + "ledger:cp"

    def binding(self, token_id: str) -> str:
        return f"{self.prefix}bind:{token_id}"

    def registrant_bucket(self, bucket: int) -> str:
        return f"{self.prefix}reg:{bucket}"

    def ticket_bucket(self, seq: int) -> str:
        return f"{self.prefix}tk:{seq // TICKET_BUCKET_SIZE}"

    # -- call-backs (docs/callbacks.md) --------------------------------------------------------

    def callback_bucket(self, seq: int) -> str:
        return f"{self.prefix}ct:{seq // TICKET_BUCKET_SIZE}"

    def account_bucket(self, seq: int) -> str:
        return f"{self.prefix}ca:{seq // TICKET_BUCKET_SIZE}"

    @property
    def outbox(self) -> str:
        return self.prefix + "ob"

    @property
    def outbox_tries(self) -> str:
        return self.prefix + "ob:try"

    @property
    def outbox_dead(self) -> str:
        return self.prefix + "ob:dead"

    @property
    def called(self) -> str:
        return self.prefix + "called"

    @property
    def carry(self) -> str:
        return self.prefix + "carry"

    @property
    def carried(self) -> str:
        return self.prefix + "carried"
