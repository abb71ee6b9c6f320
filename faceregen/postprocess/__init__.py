"""Post-processing for printing (paper section 3.3): eyeball removal, the filling, printability."""

from faceregen.postprocess.eyeballs import remove_eyeballs
from faceregen.postprocess.filling import export_filling, extract_filling, filling_composite
from faceregen.postprocess.printability import printability_report

__all__ = ["export_filling", "extract_filling", "filling_composite", "printability_report", "remove_eyeballs"]
