"""The AI gateway: every model call goes through it (routing with fallbacks, response cache,
rate limits, budgets, call log with cost), configured and watched in the Django admin.

With no Provider configured, calls go to the OPENAI_* settings (or the local model) exactly
as before; they are still logged, limited and (when asked) cached.
"""
