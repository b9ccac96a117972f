"""Sans-IO decisions: routing, circuit breakers, the retry budget, failure classification,
the body-rate floor and the endpoint records. Plain objects fed with events and a clock
value; nothing here imports trio, anyio, httpx or a socket (an import-linter contract)."""
