"""The benchmarks' settings: the test settings, plus Django's admin to compare the overview with.

The admin is not part of the product (support staff have their queue); it is installed here
only so ``make bench`` can render its changelist of the same rows beside the overview.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.admin"]
ROOT_URLCONF = "benchmarks.urls"
