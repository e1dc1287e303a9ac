"""The offline wave model: the queue's admission policy as a discrete-event simulation.

It runs the same policy as the queue service, on virtual time, fast enough for millions of
registrants (a 6-million-registrant wave in well under 30 s on one core):

- arrivals from the scenario's non-homogeneous Poisson process (`simulator.arrivals`);
- arrivals in `[opens_at - prequeue_s, opens_at)` join the pre-queue; at opening the pre-queue
  is shuffled uniformly at random and goes before every later arrival; later arrivals are FIFO;
- a new arrival after opening sees its ETA (tickets ahead x seconds per place, computed as the
  service does: admit_rate, or the achieved rate when max_active holds admissions back, less
  the share of skipped tickets) and may balk (`behaviour.balks`); the pre-queue shows no ETA;
- admission: a token bucket at `admit_rate` with `admit_burst`, only while fewer than
  `max_active` admitted sessions are active, until `quota` admissions, between opening and close;
- a waiting registrant whose patience runs out reneges: either says so (`leave`: the ticket is
  skipped from then on) or silently stops polling (the ticket is skipped `abandon_after_s` after
  the last poll; if admission reaches it before that, the token is spent and the slot is taken
  by nobody until `session_ttl_s` frees it). Skipped tickets cost no admission token. Renegers
  may come back later, after their old ticket is gone, and join again at the back
  (`behaviour.returns_later_s`);
- an admitted registrant occupies a `max_active` slot for its session time (new or returning
  flow, lognormal), or until `session_ttl_s` if it drops out of the flow or runs over.

Registrant traits are drawn from the scenario's distributions with the model's own RNG (the
model does not build full `Registrant` objects: it needs patience and bot-ness only).

Interface: `run_model(scenario, *, seed=None, admit_rate=None, max_active=None, quota=None,
population=None, sample_every=None, step_s=None, progress=None) -> RunRecord` (mode
"queued", source "model"). Memory stays bounded: per-registrant outcomes are kept for every
`sample_every`-th registrant only; the waiting line is kept in compact arrays.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Callable
from statistics import NormalDist

from simulator.arrivals import ArrivalProcess
from simulator.records import RegistrantOutcome, RunMeta, RunRecord, RunTotals, TimeSeries
from simulator.scenario import Scenario

ProgressFn = Callable[[float, int], None]  # (virtual time reached, arrivals so far)

_INF = math.inf

# Standard normal quantiles at 8,192 evenly spaced probabilities: one table look-up per
# lognormal draw instead of `random.gauss` (pure Python, the model's hot spot). The
# discretisation error is far below anything a wave parameter is known to.
_NORMAL_TABLE = tuple(NormalDist().inv_cdf((k + 0.5) / 8192) for k in range(8192))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's method for small means, the normal approximation above 50."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def default_sample_every(population: int) -> int:
    """Record at most ~50,000 registrants' outcomes."""
    return max(1, math.ceil(population / 50_000))


def run_model(
    scenario: Scenario,
    *,
    seed: int | None = None,
    admit_rate: float | None = None,
    max_active: int | None = None,
    quota: int | None = None,
    population: int | None = None,
    sample_every: int | None = None,
    step_s: float | None = None,
    progress: ProgressFn | None = None,
) -> RunRecord:
    seed = scenario.seed if seed is None else seed
    wave, clock, beh, origin = scenario.wave, scenario.clock, scenario.behaviour, scenario.origin
    rate = wave.admit_rate if admit_rate is None else admit_rate
    if rate <= 0:
        raise ValueError("admit_rate must be > 0")
    # A rate given here keeps the scenario's burst in proportion (plan scales both together).
    burst = wave.burst if admit_rate is None else max(1.0, wave.burst * rate / wave.admit_rate)
    limit_active = wave.max_active if max_active is None else max_active
    limit_active = limit_active if limit_active > 0 else 2**62
    limit_quota = wave.quota if quota is None else quota
    limit_quota = limit_quota if limit_quota > 0 else 2**62
    size = scenario.population_size if population is None else population
    every = sample_every or default_sample_every(size)
    duration = clock.duration_s
    step = step_s or (1.0 if duration <= 2 * 3600 else 60.0)

    opens, closes = clock.opens_at_s, min(clock.closes_at_s, duration)
    pre_start = opens - wave.prequeue_s
    ttl, abandon_after = wave.session_ttl_s, wave.abandon_after_s
    mix = scenario.population_mix
    bot_share = mix.bot_share + mix.joki_share
    pat_median, pat_sigma = mix.patience_median_s, mix.patience_sigma
    silent_share, dropout = beh.silent_abandon_share, beh.in_flow_dropout
    ret_p, ret_median, ret_sigma = beh.return_later_p, beh.return_median_s, beh.return_sigma
    new_share = origin.new_account_share
    new_med, ret_med_s, s_sigma = (
        origin.session_new_median_s,
        origin.session_returning_median_s,
        origin.session_sigma,
    )

    rng = random.Random(seed * 7919 + 17)
    rnd, exp = rng.random, math.exp
    normal = _NORMAL_TABLE
    balk_scale = beh.balk_scale_s

    series = TimeSeries.empty(duration, step)
    nbins = len(series)
    # Local bins with one extra slot: every event time is <= duration, so `int(t // step)` is
    # at most nbins; the extra slot is folded into the last bin at the end.
    s_arrivals, s_adm, s_comp, s_gave_up, s_peak, queue_diff, s_skip = (
        [0] * (nbins + 1) for _ in range(7)
    )
    s_active = [-1] * (nbins + 1)  # -1: no event in the bin, the gauge keeps its last value
    for k in range(nbins):
        t_bin = k * step
        series.admit_rate_target[k] = rate if opens <= t_bin < closes else 0.0
        series.origin_capacity[k] = origin.capacity

    # The waiting line, FIFO, in compact arrays; `head` is the next ticket to consider.
    q_join = array("d")
    q_skip = array("d")  # the ticket is skipped at no cost from this time on
    q_gone = array("d")  # the person stopped waiting (reneged) at this time
    q_index = array("q")
    head = 0
    prequeue: list[tuple[float, float, float, int]] = []
    # Renegers coming back, bucketed by time bin (a calendar queue: O(1) per return).
    # Bins up to `returns_loaded` have been moved into the small heap `due`, from which
    # returns are joined in exact time order before any later arrival.
    returns: list[list[tuple[float, int]] | None] = [None] * (nbins + 1)
    returns_loaded = -1
    due: list[tuple[float, int]] = []
    # Registrants admitted in person: a return planned when they joined is dropped.
    served = bytearray(1024)
    sessions: list[tuple[float, int, int]] = []  # (slot freed at, completed 0/1, index)
    outcomes: dict[int, RegistrantOutcome] = {}

    tokens, last_t, now = burst, opens, opens
    active = admitted = completed = arrived = joined = pre_joined = 0
    peak_active = peak_queue = 0
    gave_up: dict[str, int] = {}
    opened = False
    next_try = -_INF  # advance() has nothing to do before this time (the main loop skips it)

    def give_up(index: int, t: float, reason: str, ticket_join: float | None = None) -> None:
        gave_up[reason] = gave_up.get(reason, 0) + 1
        s_gave_up[int(t // step)] += 1
        o = outcomes.get(index)
        # An old ticket of someone who has joined again since does not overwrite the outcome.
        if o is not None and (ticket_join is None or o.joined_t == ticket_join):
            o.gave_up_t, o.gave_up_reason = t, reason

    def free_slots(until: float) -> None:
        nonlocal active, completed
        while sessions and sessions[0][0] <= until:
            t_free, done, index = heapq.heappop(sessions)
            active -= 1
            s_active[int(t_free // step)] = active
            if done:
                completed += 1
                s_comp[int(t_free // step)] += 1
                o = outcomes.get(index)
                if o is not None:
                    o.completed_t = t_free

    def open_wave() -> None:
        nonlocal opened
        opened = True
        rng.shuffle(prequeue)  # uniformly random order inside the pre-queue block
        for j, s, g, i in prequeue:
            q_join.append(j)
            q_skip.append(s)
            q_gone.append(g)
            q_index.append(i)
        prequeue.clear()

    def advance(until: float) -> None:
        """Admit from the head of the line up to time `until`."""
        nonlocal head, tokens, last_t, now, active, admitted, peak_active, next_try
        until = min(until, closes)
        next_try = -_INF
        while True:
            if admitted >= limit_quota:
                next_try = _INF
                break
            if head >= len(q_join):
                break
            # Earliest time the next admission may happen (never before the head joined).
            t = max(now, q_join[head])
            if tokens < 1.0:
                t = max(t, last_t + (1.0 - tokens) / rate)
            if active >= limit_active:
                if not sessions:
                    break
                t = max(t, sessions[0][0])
            if t > until:
                next_try = t
                break
            now = t
            tokens = min(burst, tokens + (now - last_t) * rate)
            last_t = now
            free_slots(now)
            if active >= limit_active:
                continue
            # Skip tickets that are gone, at no cost.
            while head < len(q_join) and q_skip[head] <= now:
                index = q_index[head]
                queue_diff[int(q_skip[head] // step)] -= 1
                s_skip[int(now // step)] += 1
                give_up(index, q_gone[head], "reneged", q_join[head])
                head += 1
            if head >= len(q_join):
                break
            if q_join[head] > now:
                continue  # the new head joined after `now`: its admission time comes next round
            index, gone_t, ticket_join = q_index[head], q_gone[head], q_join[head]
            queue_diff[int(now // step)] -= 1
            head += 1
            tokens -= 1.0
            admitted += 1
            active += 1
            s_adm[int(now // step)] += 1
            s_active[int(now // step)] = active
            k = int(now // step)
            if active > s_peak[k]:
                s_peak[k] = active
            if active > peak_active:
                peak_active = active
            if gone_t <= now:
                # A silent abandoner's ticket, admitted before it was skipped: the token is
                # spent, nobody comes, the slot waits for the TTL.
                give_up(index, gone_t, "reneged", ticket_join)
                heapq.heappush(sessions, (now + ttl, 0, index))
                continue
            if index >= len(served):
                served.extend(bytes(max(index + 1 - len(served), len(served))))
            served[index] = 1
            o = outcomes.get(index)
            if o is not None:
                o.admitted_t = now
            if rnd() < dropout:
                # Drops out of the registration flow: the slot waits for the TTL.
                heapq.heappush(sessions, (now + ttl, 0, index))
            else:
                median = new_med if rnd() < new_share else ret_med_s
                session = median * exp(s_sigma * normal[int(rnd() * 8192)])
                if session <= ttl:
                    heapq.heappush(sessions, (now + session, 1, index))
                else:
                    heapq.heappush(sessions, (now + ttl, 0, index))
            if head > 1_000_000 and head * 2 > len(q_join):
                # Drop the consumed prefix so memory follows the live line, not the wave.
                del q_join[:head], q_skip[:head], q_gone[:head], q_index[:head]
                head = 0

    eta_window = max(1, round(60.0 / step))
    eta_cache = [-1, 1.0 / rate]  # [bin, seconds per place]

    def seconds_per_place(k: int) -> float:
        """Expected seconds of wait per ticket ahead, like the service's `seconds_per_place`:
        the admission rate, or the admissions actually achieved over the last minute when
        max_active holds them back, discounted by the share of tickets skipped."""
        if eta_cache[0] == k:
            return eta_cache[1]
        lo = max(0, k - eta_window)
        done, skipped = sum(s_adm[lo:k]), sum(s_skip[lo:k])
        effective = rate
        if limit_active < 2**62 and active >= 0.95 * limit_active and done > 0 and k > lo:
            effective = min(rate, done / ((k - lo) * step))
        skip_share = skipped / (done + skipped) if done + skipped else 0.0
        eta_cache[:] = [k, (1.0 - skip_share) / effective]
        return eta_cache[1]

    def join(index: int, t: float, first: bool) -> None:
        # The hot path of the model: one call per attempt, so locals over helpers here.
        nonlocal arrived, joined, pre_joined, peak_queue
        k = int(t // step)
        s_arrivals[k] += 1
        o = None
        if first:
            arrived += 1
            if index % every == 0:
                o = outcomes[index] = RegistrantOutcome(index=index, is_bot=False, arrival_t=t)
        else:
            o = outcomes.get(index)
        if t >= closes:
            give_up(index, t, "run_ended")
            return
        if admitted >= limit_quota:
            # 409 wave_full: counted in bulk, it is most of a popular wave's arrivals.
            gave_up["rejected"] = gave_up.get("rejected", 0) + 1
            s_gave_up[k] += 1
            if o is not None:
                o.gave_up_t, o.gave_up_reason = t, "rejected"
            return
        in_pre = t < opens
        waiting = len(prequeue) if in_pre else len(q_join) - head + len(prequeue)
        is_bot = rnd() < bot_share
        # The service shows no position or ETA in the pre-queue (the order is drawn at
        # opening); after opening, ETA = tickets ahead x seconds per place, as it computes it.
        if in_pre:
            eta = 0.0
        else:
            eta = waiting * (eta_cache[1] if eta_cache[0] == k else seconds_per_place(k))
        if o is not None:
            o.is_bot = is_bot
            if not in_pre:
                o.position_at_join, o.eta_at_join_s = waiting + 1, eta
        if not is_bot and rnd() < 1.0 - exp(-eta / balk_scale):  # behaviour.balk_probability
            gave_up["balked"] = gave_up.get("balked", 0) + 1
            s_gave_up[k] += 1
            if o is not None:
                o.gave_up_t, o.gave_up_reason = t, "balked"
            return
        joined += 1
        if o is not None:
            o.joined_t, o.prequeue = t, in_pre
            o.gave_up_t = o.gave_up_reason = None
        if is_bot:
            gone = skip = _INF
        else:
            # Patience counts from joining (or from opening for the pre-queue).
            gone = (t if t > opens else opens) + pat_median * exp(
                pat_sigma * normal[int(rnd() * 8192)]
            )
            skip = gone + abandon_after if rnd() < silent_share else gone
            if rnd() < ret_p:
                # Coming back after the old ticket is gone: a new place at the back.
                back = skip + ret_median * exp(ret_sigma * normal[int(rnd() * 8192)])
                if back < closes:
                    k_back = int(back // step)
                    if k_back <= returns_loaded:
                        heapq.heappush(due, (back, index))
                    elif (bucket := returns[k_back]) is None:
                        returns[k_back] = [(back, index)]
                    else:
                        bucket.append((back, index))
        queue_diff[k] += 1
        if in_pre:
            pre_joined += 1
            prequeue.append((t, skip, gone, index))
        else:
            q_join.append(t)
            q_skip.append(skip)
            q_gone.append(gone)
            q_index.append(index)
        if waiting + 1 > peak_queue:
            peak_queue = waiting + 1

    def refuse_rest(process: ArrivalProcess, t_from: float, first_index: int) -> int:
        """Poisson counts of the arrivals after `t_from`, per bin, all refused; sampled
        registrants get an outcome with a time spread uniformly inside their bin."""
        nonlocal arrived
        index = first_index
        k = int(t_from // step)
        while k * step < closes:
            lo, hi = max(t_from, k * step), min((k + 1) * step, closes)
            n = _poisson(rng, process.expected_count(lo, hi))
            if n:
                arrived += n
                s_arrivals[k] += n
                s_gave_up[k] += n
                gave_up["rejected"] = gave_up.get("rejected", 0) + n
                first = -(-index // every) * every  # first sampled index >= index
                picked = range(first, index + n, every)
                for i, u in zip(picked, sorted(rnd() for _ in picked), strict=True):
                    t = lo + u * (hi - lo)
                    outcomes[i] = RegistrantOutcome(
                        index=i,
                        is_bot=rnd() < bot_share,
                        arrival_t=t,
                        gave_up_t=t,
                        gave_up_reason="rejected",
                    )
                index += n
            if progress is not None and lo >= next_report:
                progress(lo, index)
            k += 1
        return index

    def refuse_returns() -> None:
        """With the wave full, everyone still to come back is refused: count them per bin."""
        pending = [item for bucket in returns if bucket for item in bucket] + due
        returns[:] = [None] * len(returns)
        due.clear()
        for t_back, i_back in pending:
            if i_back < len(served) and served[i_back]:
                continue
            k = int(t_back // step)
            s_arrivals[k] += 1
            s_gave_up[k] += 1
            gave_up["rejected"] = gave_up.get("rejected", 0) + 1
            o = outcomes.get(i_back)
            if o is not None:
                o.gave_up_t, o.gave_up_reason = t_back, "rejected"

    process = scenario.arrival_process()
    if population is not None:
        process.n = float(population)
    next_report = 0.0
    index = 0

    def release_returns(until: float) -> None:
        """Join everyone coming back at or before `until`, in time order."""
        nonlocal returns_loaded
        last_bin = min(nbins, int(until // step))
        while returns_loaded < last_bin:
            returns_loaded += 1
            bucket = returns[returns_loaded]
            if bucket is not None:
                returns[returns_loaded] = None
                for item in bucket:
                    heapq.heappush(due, item)
        while due and due[0][0] <= until:
            t_back, i_back = heapq.heappop(due)
            if i_back < len(served) and served[i_back]:
                continue  # admitted before patience ran out: no reason to come back
            if not opened and t_back >= opens:
                open_wave()
            if opened:
                advance(t_back)
            join(i_back, t_back, first=False)

    for t in process.times(seed):
        if t < pre_start:
            t = pre_start  # told to come back when the pre-queue opens
        if (due and due[0][0] <= t) or t >= (returns_loaded + 1) * step:
            release_returns(t)
        if not opened and t >= opens:
            open_wave()
        if opened and t >= next_try:
            advance(t)
        join(index, t, first=True)
        index += 1
        if progress is not None and t >= next_report:
            progress(t, index)
            next_report = t + max(step, duration / 200.0)
        if admitted >= limit_quota:
            # The wave is full: every later first attempt is refused (409 wave_full) and
            # changes nothing else, so draw the remaining arrivals per bin instead of one by one.
            index = refuse_rest(process, t, index)
            refuse_returns()
            break
    release_returns(duration)
    if not opened:
        open_wave()
    advance(duration)
    free_slots(duration)
    # Whoever is still in line at the end: skipped if gone before then, else still waiting.
    for k in range(head, len(q_join)):
        skip_t = q_skip[k]
        if skip_t < duration:
            queue_diff[int(skip_t // step)] -= 1
            give_up(q_index[k], q_gone[k], "reneged", q_join[k])
        else:
            give_up(q_index[k], duration, "run_ended", q_join[k])
    if progress is not None:
        progress(duration, index)

    # Fold the extra slot into the last bin, then fill the series.
    for local in (s_arrivals, s_adm, s_comp, s_gave_up, queue_diff):
        local[nbins - 1] += local[nbins]
    s_peak[nbins - 1] = max(s_peak[nbins - 1], s_peak[nbins])
    if s_active[nbins] >= 0:
        s_active[nbins - 1] = s_active[nbins]
    series.arrivals, series.admissions = s_arrivals[:nbins], s_adm[:nbins]
    series.completions, series.gave_up = s_comp[:nbins], s_gave_up[:nbins]
    series.origin_inflight = s_peak[:nbins]
    level = last = 0
    for k in range(nbins):
        level += queue_diff[k]
        series.queue_length[k] = level
        # Gauges hold their last value through bins without events.
        if s_active[k] >= 0:
            last = s_active[k]
        series.active[k] = last

    meta = RunMeta(
        mode="queued",
        scenario=scenario.name,
        seed=seed,
        source="model",
        population=size,
        duration_s=duration,
        opens_at_s=opens,
        prequeue_s=wave.prequeue_s,
        admit_rate=rate,
        admit_burst=burst,
        max_active=0 if limit_active == 2**62 else limit_active,
        session_ttl_s=wave.session_ttl_s,
        abandon_after_s=wave.abandon_after_s,
        origin_capacity=origin.capacity,
        quota=0 if limit_quota == 2**62 else limit_quota,
        sample_every=every,
        notes=[
            "origin concurrency in the model is admitted sessions in progress (active), "
            "compared with origin.capacity in sessions",
        ],
    )
    totals = RunTotals(
        arrived=arrived,
        joined=joined,
        prequeue=pre_joined,
        admitted=admitted,
        completed=completed,
        gave_up=gave_up,
        requests=int(completed * origin.requests_per_session),
        peak_origin_inflight=peak_active,
        peak_queue_length=max(series.queue_length, default=0),
    )
    return RunRecord(meta, series, sorted(outcomes.values(), key=lambda o: o.index), totals)
