"""A handler module that fails to import (for the trio_djws.E010 check)."""

from __future__ import annotations

raise RuntimeError("this handler module is broken on purpose")
