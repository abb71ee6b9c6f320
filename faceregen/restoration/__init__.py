"""Restoration on the patient's wounded scan: registration, robust completion, wound detection, filling."""

from faceregen.restoration.completion import CompletionSettings
from faceregen.restoration.registration import IcpSettings
from faceregen.restoration.restorer import Restoration, Restorer
from faceregen.restoration.scan import Scan, read_scan, scan_from_arrays
from faceregen.restoration.wound_detection import WoundSettings

__all__ = ["CompletionSettings", "IcpSettings", "Restoration", "Restorer", "Scan", "WoundSettings", "read_scan",
           "scan_from_arrays"]
