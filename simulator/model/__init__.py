"""The offline wave model: the queue service's admission policy and the live driver's
registrants, as a discrete-event simulation on virtual time.

One policy, two clocks: the queue (`queue`) changes as `lua/join.lua`, `lua/admit.lua` and
`lua/status.lua` change it, by the rules of `queue_service.admission_policy`, and tells what
`queue_service.pacing` tells (the ETA, the poll interval, the poll deadline); its registrants
(`people`) take the live driver's decisions (`simulator.behaviour`) with fast table-backed
draws (`draws`):

- arrivals from the scenario's Poisson process; before the pre-queue opens people are told to
  come back then; arrivals in the pre-queue window are shuffled at opening and go first;
- every join is answered as the service answers it: a new ticket at the back (or, for someone
  coming back with their old ticket, that place while it still holds), its ETA = tickets ahead
  x `PaceEstimate.seconds_per_place`; humans balk on it;
- a person whose patience runs out leaves at their next poll: saying so (the ticket is skipped
  from then on) or silently (it stays live until the poll deadline they were last given);
- admission: a token bucket at `admit_rate` with `admit_burst`, while fewer than `max_active`
  slots are taken, until `quota`, between opening and close. The cursor skips tickets whose
  deadline passed (no token, no slot). A live ticket reached is admitted and holds a slot
  until its holder's deadline: present holders notice at their next poll and claim it, the
  slot then lasts `session_ttl_s` from admission or until the flow ends and `complete` is
  called. A ticket whose holder has gone (a ghost) costs a token and a slot until its
  deadline lapses;
- the flow: think time + the origin's service time (`origin`); some drop out (the slot waits
  for the TTL), some are refused at the KTP step (under age);
- renegers may come back later with their old ticket.

Every reported quantity means what it means in a live run (`simulator.driver`): `admissions`
are the queue's decisions, `queue_length` its waiting + pre-queue tickets, `active` its taken
slots, `origin_inflight` requests at the origin, waits run from the latest join to the queue's
admission.

Modules: `queue` (the queue's state and its operations), `people` (the registrants' event
handlers), `agenda` (future events), `origin` (the origin as the model sees it, a seam),
`capacity_origin` with `origin_load` and `paced_flows` (the sample origin's capacity: its
load, its schedule, its health as Prometheus reads it, flows that follow its pace),
`autopilot` (the autopilot's law as a `Controller`), `recorder` (series, fates, sampled
outcomes), `runner` (the event loop, the record, `run_model`, the `Controller` seam), `draws`.
"""

from __future__ import annotations

from simulator.model.queue import Limits
from simulator.model.runner import Controller, WaveModel, default_sample_every, run_model

__all__ = ["Controller", "Limits", "WaveModel", "default_sample_every", "run_model"]
