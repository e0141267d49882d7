"""The agent side: AMI events to cards, queue state and statistics fan-out, the event hub."""
