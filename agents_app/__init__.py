"""Persistent, streaming AI chat agents on Django, speaking Cloudflare's cf_agent_chat protocol."""
