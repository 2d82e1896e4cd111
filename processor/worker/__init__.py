"""The worker process: the Faust application plus the dispatcher."""
