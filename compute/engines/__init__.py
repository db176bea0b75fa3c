"""Task engines: each turns a prepared execution into a running task and an exit code."""
