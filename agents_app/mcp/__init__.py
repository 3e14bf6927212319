"""MCP client for agents: servers per agent instance and per agent class, kept connected by a
process-wide pool, their tools merged into Think turns, their state sent as cf_agent_mcp_servers."""
