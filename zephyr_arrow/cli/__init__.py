"""The ``zephyr-arrow`` command (``main.py``: demo, run, inspect, sql) and its demo (``demo.py``)."""
