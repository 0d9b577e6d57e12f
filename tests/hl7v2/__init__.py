"""Unit tests of the HL7 v2 ER7 reader (``converter.hl7v2``)."""
