"""One inbound call: the FastAGI script, the routing decision, the call context (the card's contract), call records."""
