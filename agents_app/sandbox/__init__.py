"""Sandboxed JavaScript for the model: code mode (`create_execute_tool`), extensions and browser
tools, all on one embedded QuickJS runner (quickjs_runner.py)."""
