"""A simulated HP EVA: a plain-Python array model with an SMI-S (CIM) face.

`EvaArray` is the array (pools, vdisks, hosts, Business Copy); `simulators.eva.cim`
puts pywbem_mock providers over it (`faked_connection`), and `simulators.eva.server`
serves the same providers as CIM-XML over HTTPS in its own process (`EvaServer`).
"""

from simulators.eva.jobs import Faults, ManualClock, WallClock
from simulators.eva.model import EvaArray, HostPort
from simulators.eva.objects import KINDS, Missing, Refusal

__all__ = ["EvaArray", "HostPort", "Faults", "ManualClock", "WallClock", "KINDS",
           "Missing", "Refusal"]
