"""Boards a labgrid coordinator allots: ``--targets tag:board=KIND --coordinator HOST:PORT``.

The modules, in the order a job goes through them (each imports only those before it):

- :mod:`.client`: one gRPC session with the coordinator (places, resources, calls);
- :mod:`.selector`: ``tag:board=KIND[+KEY=VALUE]`` and the kind's target file
  (:class:`ScheduledTarget`);
- :mod:`.health`: a board that stopped answering (power cycle, places marked bad,
  ``edge lab mark-good``);
- :mod:`.liveness`: a holder's beat on its place, and the release of places whose holder
  died;
- :mod:`.hold`: reserve, wait in the queue, acquire, run the job, release
  (:func:`run_scheduled`).

Nothing is imported here until a name is read: labgrid and grpc are an optional extra
(``pip install 'edge[labgrid]'``), imported only when a coordinator is spoken to, and
``import toolkit`` stays light (see ``tests/test_cli_startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit._lazy import attach

if TYPE_CHECKING:
    from toolkit.labgrid.health import PlaceHealth, mark_good, place_health
    from toolkit.labgrid.hold import (
        Allocation,
        SchedulerStatus,
        check_coordinator,
        hold_board,
        run_scheduled,
    )
    from toolkit.labgrid.selector import ScheduledTarget, Selector, is_selector

__all__ = ["Allocation", "PlaceHealth", "ScheduledTarget", "SchedulerStatus", "Selector",
           "check_coordinator", "hold_board", "is_selector", "mark_good", "place_health",
           "run_scheduled"]

__getattr__, __dir__ = attach(__name__, {
    "Allocation": "hold", "PlaceHealth": "health", "ScheduledTarget": "selector",
    "SchedulerStatus": "hold", "Selector": "selector", "check_coordinator": "hold",
    "hold_board": "hold", "is_selector": "selector", "mark_good": "health",
    "place_health": "health", "run_scheduled": "hold"}, globals())
