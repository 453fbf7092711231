"""End-to-end check of the service behind a real Open WebUI in a real browser (`make ui-check`).

Runs in its own venv (`.ui-venv`, Open WebUI + Playwright), not in the project's: see uicheck/run.py.
"""
