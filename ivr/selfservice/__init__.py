"""The self-service dialog: its script file, the state machine, the key and voice channels, the silent caller's time plan."""
