"""Bounds on the parser's work, whatever the input."""

MAX_PARSE_CHARS = 65_536
MAX_LINES = 200
# TradingView's own messages are a line or two; scanning more free text than this only costs time.
MAX_FREE_TEXT_CHARS = 2_048
MAX_EXTRA_LINES = 50
MAX_WRITTEN_CHARS = 200
MAX_PLACEHOLDER_PROBLEMS = 10
MAX_JSON_CONTAINERS = 512
MAX_JSON_DEPTH = 16
MAX_JSON_LEAVES = 1024
