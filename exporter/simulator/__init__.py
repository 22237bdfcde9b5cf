"""A faithful ECS API simulator: DescribeInvocationResults over loopback HTTP.

* :mod:`exporter.simulator.world`: a seeded workload that moves with a clock (``World``,
  ``ManualClock``, ``WorldSpec``, profiles ``demo``/``steady``/``bench``/``quiet``) and its
  ground truth;
* :mod:`exporter.simulator.server`: ``SimulatorServer``, the HTTP API (signature V3 checks,
  filters, paging, errors) recording what it served;
* :mod:`exporter.simulator.faults`: ``FaultPlan``, fault injection changeable at runtime;
* :mod:`exporter.simulator.http`: the loopback HTTP layer (``LoopbackServer``, ``Answer``) the
  simulator and the tests' fake services (``tests/support/http_fakes.py``) share;
* ``python -m exporter.simulator --listen 127.0.0.1:PORT``: the simulator as a program.
"""
