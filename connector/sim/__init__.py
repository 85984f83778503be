"""A Trading API simulator: a real WebSocket server on loopback, faithful to the wire protocol.

Used by the project's tests, the demo and the benchmark, and by users via ``connector simulate``.
See docs/simulator.md.
"""

from connector.sim.config import SimConfig
from connector.sim.market import SAMPLE_DATA
from connector.sim.record import Outcome, Record
from connector.sim.simulator import Simulator

__all__ = ["SAMPLE_DATA", "Outcome", "Record", "SimConfig", "Simulator"]
