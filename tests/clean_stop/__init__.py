"""What the clean-stop tests (tests/operations/test_clean_stop.py) and bench/clean_stop.py
share: a test-only app with an operation kind that blocks (`apps.py`), the settings that
install it (`settings.py`), and `./tt.sh serve` run and stopped as a terminal or a service
manager would (`portal.py`)."""
