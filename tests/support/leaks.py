"""What must never leave the service through a listing, a log, /ready or an error text:
a server's diagnostics quoting patient values, and secrets carried by a destination URL
or its credentials. Shared by the delivery tests and the running-service tests."""

from __future__ import annotations

from typing import Any

#: What a real server writes in its diagnostics (an operator probe's example).
PATIENT_DIAGNOSTIC = "Patient GIRARD Thomas born 1990-05-17 invalid"
OUTCOME: dict[str, Any] = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "processing", "diagnostics": PATIENT_DIAGNOSTIC}],
}
#: The password of a URL's userinfo and an API key in its query string.
SECRETS = ("URLPASSWORD", "QSECRET")
#: The basic-auth password of the test server started with credentials.
PASSWORD = "right-pässword"
