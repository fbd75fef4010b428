"""Suite-wide settings: Hypothesis profiles (``HYPOTHESIS_PROFILE=ci|dev``, default ci)."""

import os

from hypothesis import HealthCheck, settings

_CI_EXAMPLES = 200

settings.register_profile(
    "ci",
    max_examples=_CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=10 * _CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
