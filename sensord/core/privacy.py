"""Personal data as it may be shown: masked enough to tell people apart, not to identify them.

Used wherever a resident's or staff member's name or phone leaves the registry:
``sensord registry show``, the contacts in work-order notices, and the log
redaction filter (``sensord/logs.py``) as a safety net.
"""

from __future__ import annotations


def mask_name(name: str) -> str:
    """张小明 -> 张*明, 张明 -> 张*: enough to tell people apart, not to identify them."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """13812341234 -> 138****1234; 021-12345678 -> 021*****5678."""
    if len(phone) < 8:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
