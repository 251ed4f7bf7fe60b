"""The ``zephyr-arrow`` command (``main.py``: demo, run, inspect, sql, report) and its demo (``demo.py``)."""
