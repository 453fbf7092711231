"""A small MCP server over stdio for the corpus: two tools, and a way to die on purpose.

Run by an `McpWorkbench` (`python tests/conformance/mcp_server.py`). `add` adds; `pid` tells which
server process answered (the service must start one per worker, not one per request); `crash` ends
the process (the service must start a new session on the next use).
"""

from __future__ import annotations

import os

from mcp.server.fastmcp import FastMCP

server = FastMCP("corpus-tools", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def pid() -> int:
    """The id of this server process."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """End this server process at once."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
