"""The asyncio shell: the aiohttp app, its WebSocket and HTTP endpoints, and the process around them."""
