"""The one Redis backend every capability uses: URLs, typed handles, multiplexed
pipelined connections, scripts and one error translation (no capability logic here)."""
