"""Small helpers shared by every layer: exception groups, call sites, event-loop identity."""
