"""FHIR validation of assembled bundles.

fhir.resources ships R4B and R5 models, not R4; the resources Passerelle emits have the
same structure in R4 and R4B (differences are listed in the README), so bundles are
validated against the R4B models.
"""

from .models import ModelValidator
from .structural import StructuralValidator

__all__ = ["ModelValidator", "StructuralValidator"]
