# Copyright (c) lmclip_mm authors.
from .device_agnostic_ddp import DeviceAgnosticDDP

__all__ = ['DeviceAgnosticDDP']
