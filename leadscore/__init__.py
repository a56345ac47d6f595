"""leadscore: real-time lead scoring (Kafka -> Faust -> Redis features -> LightGBM).

The packages, from the bottom up (imports only go downwards; ``.importlinter`` checks it):

``schemas``       the contracts: JSON Schemas of every record, event validation
``features``      feature definitions, the Redis store and its Lua script, offline replay
``model``         scoring, training, evaluation, the model registry
``infra``         Kafka and Redis clients configured from the settings, topic admin
``streamer``      the worker: Faust app, batch lifecycle, publishing, metrics, web views
``integrations``  CRM sync consumer, erasure
``jobs``          offline jobs on the topics and the registry: rebuild, training from events
``tooling``       simulator, benchmark, demo, embedded broker and Redis (never imported by
                  the worker)
``cli``           the ``leadscore`` command
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leadscore")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
